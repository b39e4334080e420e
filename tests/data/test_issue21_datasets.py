"""Issue 21, datasets: `data list`, `data info --root`, Minari's arrow format, the env's observation dtype,
recoverable dm-control datasets and the note on D4RL's v2 reference scores. Real MuJoCo, real Minari files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import minari
import numpy as np
import pytest

from spaars_robot.config.tasks import TaskSpec, load_task
from spaars_robot.data.episodes import Episode, iter_episodes, read_metadata, write_dataset
from spaars_robot.data.importers import import_dataset
from spaars_robot.data.summary import summarize
from spaars_robot.envs import env_spec, make_env
from spaars_robot.errors import DatasetError
from tests.conftest import run_cli

FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")


def _write(root: Path, name: str, task: TaskSpec, episodes: list[Episode], **extra) -> Path:
    dataset_id = f"spaars/{name}-v0"
    return write_dataset(root / dataset_id, episodes, dataset_id=dataset_id, obs_dim=task.obs_dim,
                         action_dim=task.action_dim, env_id=task.env_id if task.backend == "gymnasium" else None,
                         ref_min_score=task.ref_min_score, ref_max_score=task.ref_max_score,
                         env_spec=env_spec(task), extra_metadata={"spaars_task": task.name, **extra})


def _minari_arrow(directory_root: Path, task: TaskSpec, episodes: list[Episode], monkeypatch) -> Path:
    """A dataset written by Minari's own `create_dataset_from_buffers` in its arrow format (float64, infos)."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(directory_root))
    buffers = [EpisodeBuffer(id=i, seed=ep.seed, observations=ep.observations.astype(np.float64),
                             actions=ep.actions, rewards=ep.rewards.astype(np.float64).tolist(),
                             terminations=ep.terminations.tolist(), truncations=ep.truncations.tolist(),
                             infos={"qpos": np.zeros((len(ep) + 1, 6))})
               for i, ep in enumerate(episodes)]
    minari.create_dataset_from_buffers("test/hopper/arrow-v0", buffers, env=make_env(task), algorithm_name="uniform",
                                       author="tests", author_email="t@example.com", code_permalink="none",
                                       description="test data", data_format="arrow", eval_env=make_env(task))
    return directory_root / "test" / "hopper" / "arrow-v0"


# -- data list, data info --root -----------------------------------------------------------------------

def test_data_list_shows_every_dataset_one_line_each(tmp_path, short_hopper, hopper_rollout) -> None:
    root = tmp_path / "root"
    episodes = hopper_rollout(short_hopper, 120, 1)
    _write(root, "alpha", short_hopper, episodes)
    _write(root, "beta", short_hopper, episodes[:2])
    (root / "spaars" / "gamma-v0.partial" / "data").mkdir(parents=True)  # an interrupted collection
    (root / "spaars" / "_behaviour" / "x" / "data").mkdir(parents=True)  # collection work, not a dataset
    (root / "spaars" / "_behaviour" / "x" / "data" / "metadata.json").write_text("{}")
    lines = run_cli("data", "list", "--root", str(root)).stdout.strip().splitlines()
    assert len(lines) == 3, lines
    alpha, beta, gamma = lines
    assert alpha.startswith("spaars/alpha-v0") and f"episodes {len(episodes):>6}" in alpha
    assert f"steps {sum(len(e) for e in episodes):>8}" in alpha and "task hopper-short" in alpha
    assert "env Hopper-v5" in alpha
    assert beta.startswith("spaars/beta-v0") and f"steps {sum(len(e) for e in episodes[:2]):>8}" in beta
    assert gamma.startswith("spaars/gamma-v0") and "incomplete" in gamma


def test_data_list_of_a_missing_root_is_one_line_exit_2(tmp_path) -> None:
    proc = run_cli("data", "list", "--root", str(tmp_path / "nope"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no such dataset root" in proc.stderr


def test_data_info_takes_root(tmp_path, short_hopper, hopper_rollout) -> None:
    root = tmp_path / "root"
    episodes = hopper_rollout(short_hopper, 60, 2)
    _write(root, "hopper-mine", short_hopper, episodes)
    out = run_cli("data", "info", "hopper-mine", "--root", str(root), env={"SPAARS_DATASETS": str(tmp_path / "x")})
    assert "spaars/hopper-mine-v0" in out.stdout and str(sum(len(e) for e in episodes)) in out.stdout


# -- Minari's arrow format ------------------------------------------------------------------------------

def test_minari_arrow_dataset_imports_exactly(tmp_path, short_hopper, hopper_rollout, monkeypatch) -> None:
    episodes = hopper_rollout(short_hopper, 150, 21)
    directory = _minari_arrow(tmp_path / "minari", short_hopper, episodes, monkeypatch)
    assert read_metadata(directory, verify=False)["data_format"] == "arrow"
    out = import_dataset(directory, short_hopper, tmp_path / "root")
    ours = list(iter_episodes(out))
    theirs = list(minari.load_dataset("test/hopper/arrow-v0", download=False).iterate_episodes())
    assert len(ours) == len(theirs) == len(episodes)
    for a, b, c in zip(ours, theirs, episodes):
        for key in FIELDS:
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key).astype(getattr(a, key).dtype))
            np.testing.assert_array_equal(getattr(a, key), getattr(c, key))
        assert a.seed == c.seed
    meta = read_metadata(out)
    assert meta["spaars_source_format"] == "minari" and len(meta["spaars_source_sha256"]) == 64


def test_damaged_arrow_dataset_is_a_one_line_error(tmp_path, short_hopper, hopper_rollout, monkeypatch) -> None:
    directory = _minari_arrow(tmp_path / "minari", short_hopper, hopper_rollout(short_hopper, 90, 4), monkeypatch)
    part = directory / "data" / "1" / "part-0.arrow"
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"data/1: truncated or corrupt arrow file"):
        import_dataset(directory, short_hopper, tmp_path / "root")
    shutil.rmtree(directory / "data" / "1")
    with pytest.raises(DatasetError, match="total_episodes is"):
        import_dataset(directory, short_hopper, tmp_path / "root2")


# -- the env's spaces, dm-control env_spec, reference-score note ---------------------------------------

def test_observation_space_has_the_envs_dtype(tmp_path, short_hopper, hopper_rollout, monkeypatch) -> None:
    path = _write(tmp_path / "root", "dtype", short_hopper, hopper_rollout(short_hopper, 60, 5))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))
    dataset = minari.load_dataset("spaars/dtype-v0", download=False)
    env = make_env(short_hopper)
    assert env.observation_space.dtype == np.float64
    assert dataset.observation_space == env.observation_space
    assert dataset.action_space == env.action_space
    assert env.observation_space.contains(next(dataset.iterate_episodes()).observations[0])
    assert json.loads(read_metadata(path)["observation_space"])["dtype"] == "float64"


def test_dm_control_dataset_recovers_its_environment(tmp_path, monkeypatch) -> None:
    task = load_task("dmc-walker-walk")
    env = make_env(task)
    obs, _ = env.reset(seed=0)
    observations = [obs]
    for _ in range(5):
        observations.append(env.step(np.zeros(task.action_dim, np.float32))[0])
    episode = Episode(np.asarray(observations, np.float32), np.zeros((5, task.action_dim), np.float32),
                      np.zeros(5, np.float32), np.zeros(5, bool), np.array([0, 0, 0, 0, 1], bool), 0)
    _write(tmp_path / "root", "walker", task, [episode])
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))
    dataset = minari.load_dataset("spaars/walker-v0", download=False)
    recovered = dataset.recover_environment()
    assert recovered.spec.max_episode_steps == task.max_episode_steps
    again, _ = recovered.reset(seed=0)
    np.testing.assert_array_equal(again, obs)  # the same dm-control task, same seed, same start
    assert dataset.observation_space == env.observation_space
    summary = summarize(tmp_path / "root" / "spaars" / "walker-v0")
    assert summary.reference_scores is not None and "dm-control" in summary.reference_scores


def test_info_says_d4rl_v2_reference_scores_are_applied_to_v5(tmp_path, short_hopper, hopper_rollout) -> None:
    root = tmp_path / "root"
    _write(root, "note", short_hopper, hopper_rollout(short_hopper, 60, 6))
    summary = summarize(root / "spaars" / "note-v0")
    assert summary.reference_scores is not None
    assert "D4RL's v2 reference scores applied to Hopper-v5" in summary.reference_scores
    assert "close to, not identical with" in summary.reference_scores
    out = run_cli("data", "info", "note", "--root", str(root)).stdout
    assert "D4RL's v2" in out and "Hopper-v5" in out
