"""Goal-conditioned (Dict-observation) gymnasium-robotics envs as the flat Box env the rest of the stack expects.

gymnasium-robotics' goal envs observe a dict: `observation` (the robot and objects), `achieved_goal` and
`desired_goal` (arrays for AntMaze, per-subtask dicts for FrankaKitchen). Datasets, replay, networks, the safety
layer and exported bundles all take one float vector, so the task file lists the keys to keep and their order
(`TaskSpec.observation_keys`) and this wrapper concatenates them. Each key's value is flattened as
`gymnasium.spaces.flatten` does, so a nested dict (kitchen's goals) contributes its entries in the sorted key
order of its `Dict` space, which is fixed: it does not depend on the order subtasks are listed or completed.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import load_env_creator

from spaars_robot.envs.robotics_compat import ensure_gymnasium_robotics


class FlatGoalObservation(gym.ObservationWrapper):
    """Concatenate `keys` of a Dict observation, in that order, into one float64 vector (always a fresh array)."""

    def __init__(self, env: gym.Env, keys: list[str]) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Dict):
            raise ValueError(f"observation_keys given, but the env's observation space is {space}, not a Dict")
        missing = [key for key in keys if key not in space.spaces]
        if missing:
            raise ValueError(f"observation keys {missing} not in the env's observation ({sorted(space.spaces)})")
        self.keys = list(keys)
        self._spaces = [space[key] for key in keys]
        size = sum(gym.spaces.flatdim(s) for s in self._spaces)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float64)

    def observation(self, observation: dict[str, Any]) -> np.ndarray:
        return np.concatenate([np.asarray(gym.spaces.flatten(s, observation[k]), dtype=np.float64)
                               for k, s in zip(self.keys, self._spaces)])


def make_goal_env(env_id: str, observation_keys: list[str], env_kwargs: dict | None = None,
                  render_mode: str | None = None) -> gym.Env:
    """The gymnasium-robotics env `env_id` with `env_kwargs`, its observation flattened; no time limit.

    The entry point of the task's recorded `EnvSpec` (`make.env_spec`), so `gym.make(spec)` adds the task's
    episode limit exactly once and Minari's `recover_environment()` rebuilds the same flat env. The env is
    built from its registered entry point, not with `gym.make`, which would wrap a second time limit inside.
    """
    ensure_gymnasium_robotics()
    registered = gym.spec(env_id)
    creator = load_env_creator(registered.entry_point) if isinstance(registered.entry_point, str) \
        else registered.entry_point
    kwargs = {**registered.kwargs, **(env_kwargs or {})}
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    env = creator(**kwargs)
    remove_maze_xml(env)
    return FlatGoalObservation(env, observation_keys)


def remove_maze_xml(env: gym.Env) -> None:
    """Delete the maze model file gymnasium-robotics 1.4.2 writes for every AntMaze/PointMaze env and never removes.

    `Maze.make_maze` saves the maze's MJCF as `<tmp>/ant_maze<time>.xml` (the parent of a TemporaryDirectory it
    then deletes, so the file itself outlives it); MuJoCo has parsed it by the time the env exists, so it is not
    needed again. Left in place, every evaluation, test and sweep trial that builds a maze env adds ~60 KB to /tmp
    (906 files after two days of this project's runs)."""
    path = getattr(env.unwrapped, "tmp_xml_file_path", None)
    if isinstance(path, str) and os.path.basename(path).startswith(("ant_maze", "point_maze")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
