"""Build the simulator for a task with its episode limit applied exactly once."""
from __future__ import annotations

import gymnasium as gym

from spaars_robot.config.tasks import TaskSpec
from spaars_robot.errors import ConfigError


def make_env(task: TaskSpec, render_mode: str | None = None) -> gym.Env:
    """A gymnasium env for `task`; episodes are cut at `task.max_episode_steps` (reported as truncation)."""
    if task.backend == "gymnasium":
        try:
            env = gym.make(task.env_id, max_episode_steps=task.max_episode_steps, render_mode=render_mode)
        except gym.error.Error as exc:
            raise ConfigError(f"task {task.name}: cannot make gymnasium env {task.env_id!r}: {exc}") from exc
    else:
        from spaars_robot.envs.dmc import DmControlEnv

        domain, _, name = task.env_id.partition("-")
        try:
            env = gym.wrappers.TimeLimit(DmControlEnv(domain, name, render_mode), task.max_episode_steps)
        except (ValueError, KeyError, AttributeError) as exc:
            raise ConfigError(f"task {task.name}: cannot load dm-control task {task.env_id!r}: {exc}") from exc
    obs_dim = env.observation_space.shape[0]
    act_dim = env.action_space.shape[0]
    if (obs_dim, act_dim) != (task.obs_dim, task.action_dim):
        raise ConfigError(
            f"task {task.name}: config says obs_dim={task.obs_dim}, action_dim={task.action_dim} "
            f"but {task.env_id} has {obs_dim}, {act_dim}"
        )
    return env
