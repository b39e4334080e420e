"""Our on-disk format is Minari's: our reader and Minari's own loader see the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import minari
import numpy as np
import pytest

from spaars_robot.config.tasks import load_task
from spaars_robot.data.episodes import MAIN_FILE, METADATA_FILE, iter_episodes, read_metadata, write_dataset
from spaars_robot.data.summary import summarize

DATASET_ID = "spaars/hopper-roundtrip-v0"


@pytest.fixture
def written(tmp_path: Path, hopper_rollout):
    task = load_task("hopper")
    episodes = hopper_rollout(task, 400, 7)
    path = write_dataset(
        tmp_path / "root" / DATASET_ID,
        episodes,
        dataset_id=DATASET_ID,
        obs_dim=task.obs_dim,
        action_dim=task.action_dim,
        env_id=task.env_id,
        ref_min_score=task.ref_min_score,
        ref_max_score=task.ref_max_score,
    )
    return task, episodes, path


def test_write_then_iter_episodes_is_identity(written) -> None:
    _, episodes, path = written
    back = list(iter_episodes(path))
    assert len(back) == len(episodes) > 3
    assert any(ep.terminations.any() for ep in back) and back[-1].truncations[-1]
    for a, b in zip(episodes, back):
        for key in ("observations", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        assert a.seed == b.seed
    assert not Path(str(path) + ".partial").exists()


def test_layout_and_metadata(written) -> None:
    task, episodes, path = written
    data = path / "data"
    assert sorted(p.name for p in data.iterdir()) == [MAIN_FILE, METADATA_FILE]
    meta = json.loads((data / METADATA_FILE).read_text())
    assert meta["dataset_id"] == DATASET_ID and meta["data_format"] == "hdf5"
    assert meta["total_episodes"] == len(episodes)
    assert meta["total_steps"] == sum(len(ep) for ep in episodes)
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (task.ref_min_score, task.ref_max_score)
    assert read_metadata(path) == meta
    with h5py.File(data / MAIN_FILE, "r") as fh:
        group = fh["episode_0"]
        assert group["observations"].shape == (len(episodes[0]) + 1, task.obs_dim)
        assert group["terminations"].dtype == bool and group["truncations"].dtype == bool
        assert group.attrs["total_steps"] == len(episodes[0])


def test_minari_loads_it_offline_with_the_same_numbers(written, monkeypatch: pytest.MonkeyPatch) -> None:
    task, episodes, path = written
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path.parents[1]))
    dataset = minari.load_dataset(DATASET_ID, download=False)
    assert dataset.total_episodes == len(episodes)
    assert dataset.total_steps == sum(len(ep) for ep in episodes)
    loaded = list(dataset.iterate_episodes())
    for a, b in zip(episodes, loaded):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.rewards, b.rewards)
        np.testing.assert_array_equal(a.terminations, b.terminations)
        np.testing.assert_array_equal(a.truncations, b.truncations)
    # Minari's own normalisation (from our metadata) agrees with our summary and the task's formula
    returns = np.array([ep.episode_return for ep in episodes])
    ours = summarize(path)
    theirs = 100.0 * minari.get_normalized_score(dataset, returns)
    assert ours.normalized_score_mean == pytest.approx(float(np.mean(theirs)), rel=1e-6)
    assert ours.normalized_score_mean == pytest.approx(np.mean([task.normalized_score(r) for r in returns]))
    assert ours.episodes == len(episodes) and ours.steps == dataset.total_steps
