"""The one online loop: act, step the simulator, store, update; shared by `train` and `data collect`.

Every online run goes through it: each `--algo` of `train` (via the runner) and the SAC behaviour-policy
training of `data collect` (train/collect.py), so exploration, storage, update timing and episode seeding
cannot drift apart between them. Callers attach what differs (evaluation, checkpoints, stopping rules) as
hooks that run at fixed points of a step.

Each episode resets from a seed derived from its index (`seed * EPISODE_SEED_STRIDE + episode`), which
is what lets a run resumed from an episode-boundary checkpoint replay exactly what an uninterrupted run does.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from spaars_robot.algos.base import Agent
from spaars_robot.algos.offline import SupportScorer
from spaars_robot.data.replay import ReplayBuffer
from spaars_robot.errors import TrainingDiverged

EPISODE_SEED_STRIDE = 1_000_003


@dataclass
class StepInfo:
    """What one environment step did, handed to the caller's `on_step` hook."""

    step: int  # env steps taken so far, this one included
    source: str
    support_score: float  # nan when no support model is attached
    terminated: bool
    truncated: bool
    metrics: dict[str, torch.Tensor] | None  # the last update's metrics (None before updates start)
    observation: np.ndarray | None = None  # the observation the action was chosen on (not a copy)


def identity(x: torch.Tensor) -> torch.Tensor:
    """The encoding of observations for agents that see them raw (sac, data collect)."""
    return x


class OnlineLoop:
    def __init__(self, env, agent: Agent, replay: ReplayBuffer, sample: Callable[[], dict[str, torch.Tensor]],
                 seed: int, utd: int = 1, update_after: int = 0,
                 encode: Callable[[torch.Tensor], torch.Tensor] = identity, reward_scale: float = 1.0,
                 support: SupportScorer | None = None, bf16_updates: bool = False) -> None:
        self.env, self.agent, self.replay, self.sample = env, agent, replay, sample
        self.bf16_updates = bf16_updates  # only `agent.update` runs under the autocast, never `explore`
        self.seed, self.utd, self.update_after = seed, utd, update_after
        self.encode, self.reward_scale, self.support = encode, reward_scale, support
        self.step = 0
        self.episode = 0
        self.metrics: dict[str, torch.Tensor] | None = None

    def _reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=self.seed * EPISODE_SEED_STRIDE + self.episode)
        self.agent.begin_episode()
        return obs

    def run(self, until: int, on_step: Callable[[StepInfo], bool] | None = None,
            on_episode_end: Callable[[StepInfo], bool] | None = None, end_episode_at_until: bool = False) -> None:
        """Step until `until` env steps, or until a hook returns True (stop).

        `on_step` runs after the updates of every step; `on_episode_end` after the episode counter has moved
        on and before the next reset (checkpoints go there: the next episode is fully determined by it).
        With `end_episode_at_until`, reaching `until` ends the episode too (a budget cut, not a time limit).
        """
        obs = self._reset()
        while self.step < until:
            action, source = self.agent.explore(obs)
            if not np.isfinite(action).all():
                raise TrainingDiverged(f"the agent produced a non-finite action at online step {self.step} (its "
                                       "networks hold NaN/inf); the last checkpoint keeps the last finite state, "
                                       "but a resume replays the same steps: change the config (e.g. a lower lr)")
            score = self.support.score(obs, action) if self.support is not None else math.nan
            next_obs, reward, terminated, truncated, step_info = self.env.step(action)
            # under a safety layer the env applied a shaped action: the transition is about that one
            applied = step_info.get("applied_action", action)
            device = self.replay.device  # encoded where the networks and the buffer are (`train --device`)
            self.replay.add(self.encode(torch.as_tensor(obs, dtype=torch.float32, device=device)), applied,
                            float(reward) * self.reward_scale,
                            self.encode(torch.as_tensor(next_obs, dtype=torch.float32, device=device)), terminated,
                            truncated)
            acted_on, obs = obs, next_obs
            self.step += 1
            if self.step > self.update_after:
                with (torch.autocast(self.replay.device.type, dtype=torch.bfloat16) if self.bf16_updates
                      else contextlib.nullcontext()):
                    for _ in range(self.utd):
                        self.metrics = self.agent.update(self.sample())
            info = StepInfo(self.step, source, score, bool(terminated), bool(truncated), self.metrics,
                            acted_on)
            stop = bool(on_step(info)) if on_step is not None else False
            if terminated or truncated or (end_episode_at_until and self.step >= until):
                self.episode += 1
                stop = (bool(on_episode_end(info)) if on_episode_end is not None else False) or stop
                if stop:
                    return
                obs = self._reset()
            elif stop:
                return
