"""Import of D4RL flat HDF5 files and Minari directories the user already has, from real files."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import minari
import numpy as np
import pytest
import torch

from spaars_robot.config.tasks import TaskSpec
from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.data.episodes import Episode, iter_episodes, read_metadata, write_dataset
from spaars_robot.data.importers import default_name, import_dataset, read_d4rl
from spaars_robot.errors import DatasetError

FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")


def qlearning_dataset_reference(path: Path) -> dict[str, np.ndarray]:
    """`d4rl.qlearning_dataset(env, dataset)` (d4rl/__init__.py, terminate_on_end=False), line for line."""
    with h5py.File(path, "r") as fh:
        dataset = {k: fh[k][()] for k in ("observations", "actions", "rewards", "terminals", "timeouts")}
    n = dataset["rewards"].shape[0]
    obs_, next_obs_, action_, reward_, done_ = [], [], [], [], []
    for i in range(n - 1):
        obs = dataset["observations"][i].astype(np.float32)
        new_obs = dataset["observations"][i + 1].astype(np.float32)
        action = dataset["actions"][i].astype(np.float32)
        reward = dataset["rewards"][i].astype(np.float32)
        done_bool = bool(dataset["terminals"][i])
        final_timestep = dataset["timeouts"][i]
        if final_timestep:
            continue
        obs_.append(obs)
        next_obs_.append(new_obs)
        action_.append(action)
        reward_.append(reward)
        done_.append(done_bool)
    return {
        "observations": np.array(obs_),
        "actions": np.array(action_),
        "next_observations": np.array(next_obs_),
        "rewards": np.array(reward_),
        "terminals": np.array(done_),
    }


@pytest.fixture
def truth(short_hopper: TaskSpec, hopper_rollout) -> list[Episode]:
    episodes = hopper_rollout(short_hopper, 600, 3)
    assert any(ep.terminations.any() for ep in episodes), "fixture needs falls"
    assert any(ep.truncations[-1] and len(ep) == 30 for ep in episodes), "fixture needs timeouts"
    return episodes


def test_with_next_observations_recovers_every_episode_exactly(
    tmp_path, short_hopper, truth, d4rl_writer
) -> None:
    src = d4rl_writer(tmp_path / "hopper_medium-v2.hdf5", truth)
    out = import_dataset(src, short_hopper, tmp_path / "root")
    assert out == tmp_path / "root" / "spaars" / "hopper-medium-d4rl-v0"
    back = list(iter_episodes(out))
    assert len(back) == len(truth)
    for a, b in zip(truth, back):
        for key in FIELDS:
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    meta = read_metadata(out)
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (
        short_hopper.ref_min_score,
        short_hopper.ref_max_score,
    )
    assert meta["spaars_source_format"] == "d4rl" and meta["spaars_task"] == "hopper-short"


def test_without_next_observations_matches_d4rl_qlearning_dataset(
    tmp_path, short_hopper, truth, d4rl_writer
) -> None:
    src = d4rl_writer(tmp_path / "hopper-medium-v0.hdf5", truth, next_observations=False)
    episodes = read_d4rl(src, short_hopper)
    # a timeout or the end of the file loses the last transition; a fall keeps it
    for a, b in zip(truth, episodes):
        expected = len(a) if a.terminations[-1] else len(a) - 1
        assert len(b) == expected
        assert b.terminations[-1] == a.terminations[-1] and b.truncations[-1] != a.terminations[-1]
        np.testing.assert_array_equal(
            a.observations[: len(b) + (0 if a.terminations[-1] else 1)],
            b.observations[: len(b) + (0 if a.terminations[-1] else 1)],
        )
    ours = OfflineDataset.from_episodes(episodes)
    ref = qlearning_dataset_reference(src)
    # which source row each of our transitions came from
    starts = np.cumsum([0] + [len(a) for a in truth])[:-1]
    rows = np.concatenate([start + np.arange(len(b)) for start, b in zip(starts, episodes)])
    with h5py.File(src, "r") as fh:
        fall_at_timeout = (fh["terminals"][()] & fh["timeouts"][()])[rows]
    # one deliberate difference: a fall on the time-limit step keeps its transition (D4RL skips it)
    assert fall_at_timeout.sum() >= 1, "fixture should contain a fall on the last allowed step"
    keep = torch.from_numpy(~fall_at_timeout)
    assert int(keep.sum()) == len(ref["rewards"])
    np.testing.assert_array_equal(ours.obs[keep].numpy(), ref["observations"])
    np.testing.assert_array_equal(ours.action[keep].numpy(), ref["actions"])
    np.testing.assert_array_equal(ours.reward[keep].numpy(), ref["rewards"])
    np.testing.assert_array_equal(ours.done[keep].numpy() > 0.5, ref["terminals"])
    # next observations agree wherever they can be known (D4RL puts the next episode's start after a fall)
    alive = ~ref["terminals"]
    np.testing.assert_array_equal(ours.next_obs[keep].numpy()[alive], ref["next_observations"][alive])


def test_files_without_timeouts_are_cut_at_the_episode_limit(
    tmp_path, short_hopper, d4rl_writer, hopper_rollout
) -> None:
    episodes = hopper_rollout(short_hopper, 200, 11)
    src = d4rl_writer(tmp_path / "v0.hdf5", episodes)
    with h5py.File(src, "a") as fh:
        del fh["timeouts"]
    back = read_d4rl(src, short_hopper)
    assert [len(ep) for ep in back] == [len(ep) for ep in episodes]
    assert [bool(ep.truncations[-1]) for ep in back] == [bool(ep.truncations[-1]) for ep in episodes]


def test_column_shaped_rewards_are_squeezed(tmp_path, short_hopper, truth, d4rl_writer) -> None:
    src = d4rl_writer(tmp_path / "col.hdf5", truth)
    with h5py.File(src, "a") as fh:
        rewards = fh["rewards"][()]
        del fh["rewards"]
        fh["rewards"] = rewards[:, None]
    back = read_d4rl(src, short_hopper)
    np.testing.assert_array_equal(np.concatenate([ep.rewards for ep in back]), rewards)


def test_existing_dataset_is_not_replaced_without_overwrite(
    tmp_path, short_hopper, truth, d4rl_writer
) -> None:
    src = d4rl_writer(tmp_path / "x.hdf5", truth)
    import_dataset(src, short_hopper, tmp_path / "root", name="mine")
    with pytest.raises(DatasetError, match="already exists; pass --overwrite"):
        import_dataset(src, short_hopper, tmp_path / "root", name="mine")
    import_dataset(src, short_hopper, tmp_path / "root", name="mine", overwrite=True)
    with pytest.raises(DatasetError, match="invalid dataset name"):
        import_dataset(src, short_hopper, tmp_path / "root", name="Mine-v2")


def test_minari_directory_written_by_minari_itself(
    tmp_path, short_hopper, hopper_rollout, monkeypatch
) -> None:
    """A dataset written by Minari's own `create_dataset_from_buffers` (float64, infos) imports exactly."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    from spaars_robot.envs import make_env

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    episodes = hopper_rollout(short_hopper, 150, 21)
    buffers = [
        EpisodeBuffer(
            id=i,
            seed=ep.seed,
            observations=ep.observations.astype(np.float64),
            actions=ep.actions,
            rewards=ep.rewards.astype(np.float64).tolist(),
            terminations=ep.terminations.tolist(),
            truncations=ep.truncations.tolist(),
            infos={"qpos": np.zeros((len(ep) + 1, 6))},
        )
        for i, ep in enumerate(episodes)
    ]
    minari.create_dataset_from_buffers(
        "test/hopper/short-v0",
        buffers,
        env=make_env(short_hopper),
        algorithm_name="uniform",
        author="tests",
        author_email="t@example.com",
        code_permalink="none",
        data_format="hdf5",
        description="test data",
        eval_env=make_env(short_hopper),
    )
    directory = tmp_path / "minari" / "test" / "hopper" / "short-v0"
    assert default_name(directory, "minari") == "short-minari"
    out = import_dataset(directory, short_hopper, tmp_path / "root")
    ours = list(iter_episodes(out))
    theirs = list(minari.load_dataset("test/hopper/short-v0", download=False).iterate_episodes())
    assert len(ours) == len(theirs) == len(episodes)
    for a, b, c in zip(ours, theirs, episodes):
        np.testing.assert_array_equal(a.observations, b.observations.astype(np.float32))
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.rewards, b.rewards.astype(np.float32))
        np.testing.assert_array_equal(a.terminations, b.terminations)
        np.testing.assert_array_equal(a.truncations, b.truncations)
        np.testing.assert_array_equal(a.observations, c.observations)
    assert read_metadata(out)["ref_max_score"] == short_hopper.ref_max_score


def test_our_own_dataset_reimports_as_minari(tmp_path, short_hopper, truth) -> None:
    src = write_dataset(
        tmp_path / "a" / "spaars" / "x-v0",
        truth,
        dataset_id="spaars/x-v0",
        obs_dim=11,
        action_dim=3,
        env_id=None,
        ref_min_score=None,
        ref_max_score=None,
    )
    out = import_dataset(src, short_hopper, tmp_path / "b", name="copy")
    assert [len(e) for e in iter_episodes(out)] == [len(e) for e in truth]


def test_cli_import_then_info(tmp_path, short_hopper, truth, d4rl_writer, monkeypatch, capsys) -> None:
    from spaars_robot import cli

    src = d4rl_writer(tmp_path / "hopper_medium-v2.hdf5", truth)
    monkeypatch.setenv("SPAARS_DATASETS", str(tmp_path / "root"))
    monkeypatch.setattr(
        sys,
        "argv",
        ["spaars-robot", "data", "import", str(src), "--task", str(tmp_path / "hopper-short.yaml")],
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code in (0, None)
    monkeypatch.setattr(sys, "argv", ["spaars-robot", "data", "info", "hopper-medium-d4rl"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "spaars/hopper-medium-d4rl-v0" in out and f"{sum(len(e) for e in truth)}" in out
    assert "normalized_score_mean" in out
