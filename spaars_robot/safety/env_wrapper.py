"""The deployed safety layer inside the simulator: train and evaluate under the limits the robot will apply.

A policy trained without its safety spec meets the soft zone, bounds and rate limits for the first time on
the robot: the shipped hopper bundle lost ~10 normalised points to `safety/hopper.yaml` (BENCHMARKS "What
the spec costs"), a halfcheetah run fell from 53 to 39. This wrapper runs the very `SafetyLayer.apply` that
`serve` runs, per step, so the policy learns the dynamics of what is actually applied.

What the learner sees: the replay stores the *applied* action (returned in `info["applied_action"]`), not the
commanded one. The transition (s, a, r, s') is then a true sample of the environment's dynamics under the
action it received; storing the commanded action would teach the critic that commands deep in the soft zone
have the effect of the shaped action, a mismatch the actor could exploit. The offline dataset holds applied
actions too (the behaviour policy's actions as the simulator executed them), so both halves of a batch agree.

One safety state per episode, started like a fresh server session (from rest for torque commands): each
training episode starts the robot from rest, as a new controller session does.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from spaars_robot.safety.limits import LIMIT_KINDS, SafetyLayer


class SafetyLayerEnv(gym.Wrapper):
    """Every action passes `layer.apply(action, state, observation)` before the wrapped env steps."""

    def __init__(self, env: gym.Env, layer: SafetyLayer) -> None:
        super().__init__(env)
        self.layer = layer
        self.state = layer.new_state()
        self._obs: np.ndarray | None = None
        self.limit_counts = dict.fromkeys(LIMIT_KINDS, 0)  # over the wrapper's life, by kind
        self.steps = 0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.state = self.layer.new_state()
        self._obs = obs
        return obs, info

    def step(self, action):
        result = self.layer.apply(np.asarray(action, dtype=np.float64), self.state, self._obs)
        applied = result.action.astype(self.env.action_space.dtype)
        obs, reward, terminated, truncated, info = self.env.step(applied)
        self._obs = obs
        self.steps += 1
        for kind in result.limits:
            self.limit_counts[kind] += 1
        return obs, reward, terminated, truncated, {**info, "applied_action": applied,
                                                     "safety_limits": result.limits}
