"""Shared fixtures for dataset tests: real Hopper rollouts, D4RL-layout files, array digests."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from spaars_robot.config.tasks import TaskSpec, load_task, tasks_dir
from spaars_robot.data.episodes import MAIN_FILE, Episode
from spaars_robot.envs import make_env

os.environ.setdefault("MUJOCO_GL", "egl")
SHORT_LIMIT = 30


@pytest.fixture
def short_hopper(tmp_path: Path) -> TaskSpec:
    """Hopper with a 30-step episode limit, so a few hundred rows hold both falls and timeouts."""
    raw = yaml.safe_load((tasks_dir() / "hopper.yaml").read_text())
    raw["name"], raw["max_episode_steps"] = "hopper-short", SHORT_LIMIT
    path = tmp_path / "hopper-short.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_task(path)


def rollout_episodes(task: TaskSpec, steps: int, seed: int) -> list[Episode]:
    """Real MuJoCo episodes under a small uniform-random policy; the last one is cut at `steps`."""
    env = make_env(task)
    rng = np.random.default_rng(seed)
    episodes, total = [], 0
    while total < steps:
        obs, _ = env.reset(seed=seed + len(episodes))
        observations, actions, rewards, terms, truncs = [obs], [], [], [], []
        while True:
            action = rng.uniform(-0.3, 0.3, task.action_dim).astype(np.float32)
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            total += 1
            cut = total >= steps and not terminated
            terms.append(terminated)
            truncs.append(truncated or cut)
            if terminated or truncated or cut:
                break
        episodes.append(
            Episode(
                np.asarray(observations, np.float32),
                np.asarray(actions, np.float32),
                np.asarray(rewards, np.float32),
                np.asarray(terms),
                np.asarray(truncs),
                seed + len(episodes),
            )
        )
    env.close()
    return episodes


@pytest.fixture
def hopper_rollout() -> Callable[[TaskSpec, int, int], list[Episode]]:
    return rollout_episodes


def write_d4rl(
    path: Path, episodes: list[Episode], *, next_observations: bool = True, file_cut: bool = True
) -> Path:
    """A flat table laid out like D4RL's `scripts/generation/mujoco/collect_data.py` output.

    `terminals` = env termination, `timeouts` = time-limit cut, no row for final observations,
    `infos/*` and `metadata/*` side tables. With `file_cut` the last episode stops mid-way with
    neither flag set, like the 1M-row D4RL files.
    """

    def rows(key: str) -> np.ndarray:
        return np.concatenate([getattr(ep, key) for ep in episodes])

    timeouts = rows("truncations").copy()
    if file_cut:
        timeouts[-1] = False
    with h5py.File(path, "w") as fh:
        fh["observations"] = np.concatenate([ep.observations[:-1] for ep in episodes])
        fh["actions"] = rows("actions")
        fh["rewards"] = rows("rewards")
        fh["terminals"] = rows("terminations")
        fh["timeouts"] = timeouts
        if next_observations:
            fh["next_observations"] = np.concatenate([ep.observations[1:] for ep in episodes])
        n = len(timeouts)
        fh["infos/action_log_probs"] = np.zeros(n, np.float32)
        fh["infos/qpos"] = np.zeros((n, 6), np.float32)
        fh["infos/qvel"] = np.zeros((n, 6), np.float32)
        fh["metadata/algorithm"] = "SAC"
        fh["metadata/iteration"] = 1
    return path


@pytest.fixture
def d4rl_writer() -> Callable[..., Path]:
    return write_d4rl


def array_digest(dataset: Path) -> str:
    """SHA-256 over every episode array in `main_data.hdf5`, in episode order (ignores HDF5 layout)."""
    digest = hashlib.sha256()
    with h5py.File(dataset / "data" / MAIN_FILE, "r") as fh:
        for name in sorted(fh.keys(), key=lambda n: int(n.split("_")[1])):
            for key in ("observations", "actions", "rewards", "terminations", "truncations"):
                array = np.ascontiguousarray(fh[name][key][()])
                digest.update(f"{name}/{key}{array.dtype}{array.shape}".encode())
                digest.update(array.tobytes())
    return digest.hexdigest()


@pytest.fixture
def digest_arrays() -> Callable[[Path], str]:
    return array_digest
