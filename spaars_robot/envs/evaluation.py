"""Deterministic evaluation episodes on fixed seeds: the one loop behind every reported score."""
from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from spaars_robot.config.tasks import TaskSpec
from spaars_robot.envs.make import make_env


def run_episodes(act: Callable[[np.ndarray], tuple[np.ndarray, str]], task: TaskSpec, episodes: int,
                 seed_base: int, begin_episode: Callable[[], None] | None = None,
                 make: Callable[[], gym.Env] | None = None) -> tuple[list[float], float]:
    """Play `episodes` episodes from seeds seed_base + i (never training seeds).

    Returns the episode returns and the share of steps whose action came from the raw policy
    (`act` reports the source of each action). `make` builds the env (default `make_env(task)`; a run
    trained under a safety spec evaluates under it too, as it will be served).
    """
    env = make() if make is not None else make_env(task)
    returns, raw_steps, steps = [], 0, 0
    for i in range(episodes):
        obs, _ = env.reset(seed=seed_base + i)
        if begin_episode is not None:
            begin_episode()
        total, done = 0.0, False
        while not done:
            action, source = act(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            raw_steps += source == "raw"
            steps += 1
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns, raw_steps / max(steps, 1)
