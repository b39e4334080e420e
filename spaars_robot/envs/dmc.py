"""A gymnasium view of a dm-control suite task, so every consumer sees one env interface."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class DmControlEnv(gym.Env):
    """Flattens dm-control's observation dict in key order; `terminated` is never set because suite tasks
    have no failure terminations, and the time limit is reported as truncation."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, domain: str, task: str, render_mode: str | None = None) -> None:
        from dm_control import suite

        self._domain, self._task = domain, task
        self._env = suite.load(domain, task, task_kwargs={"random": 0})
        spec = self._env.action_spec()
        obs_size = sum(int(np.prod(v.shape)) for v in self._env.observation_spec().values())
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_size,), np.float64)
        self.action_space = gym.spaces.Box(spec.minimum.astype(np.float32), spec.maximum.astype(np.float32))
        self.render_mode = render_mode
        self.dt = float(self._env.control_timestep())

    @staticmethod
    def _flatten(observation: dict[str, Any]) -> np.ndarray:
        return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in observation.values()])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            from dm_control import suite

            self._env = suite.load(self._domain, self._task, task_kwargs={"random": seed})
        step = self._env.reset()
        return self._flatten(step.observation), {}

    def step(self, action: np.ndarray):
        step = self._env.step(np.asarray(action, dtype=np.float64))
        truncated = step.last()
        return self._flatten(step.observation), float(step.reward or 0.0), False, truncated, {}

    def render(self):
        return self._env.physics.render(height=240, width=320, camera_id=0)
