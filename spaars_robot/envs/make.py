"""Build the simulator for a task with its episode limit applied exactly once."""
from __future__ import annotations

from dataclasses import replace

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec

from spaars_robot.config.tasks import TaskSpec
from spaars_robot.envs.mujoco_log import configure_mujoco_logging
from spaars_robot.errors import ConfigError

DMC_ENTRY_POINT = "spaars_robot.envs.dmc:DmControlEnv"


def make_env(task: TaskSpec, render_mode: str | None = None) -> gym.Env:
    """A gymnasium env for `task`; episodes are cut at `task.max_episode_steps` (reported as truncation)."""
    configure_mujoco_logging()
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


def env_spec(task: TaskSpec) -> EnvSpec:
    """The gymnasium spec that rebuilds `task`'s env with `gym.make(spec)`, dm-control tasks included.

    Datasets record it as Minari's `env_spec`, so `MinariDataset.recover_environment()` works on every
    dataset this tool writes: a dm-control task becomes a spec whose entry point is our `DmControlEnv`
    (importable wherever spaars-robot is installed), with the task's episode limit.
    """
    if task.backend == "gymnasium":
        try:
            spec = gym.spec(task.env_id)
        except gym.error.Error as exc:
            raise ConfigError(f"task {task.name}: unknown gymnasium env {task.env_id!r}: {exc}") from exc
        return replace(spec, max_episode_steps=task.max_episode_steps)
    domain, _, name = task.env_id.partition("-")
    return EnvSpec(id=f"spaars/dmc-{task.env_id}-v0", entry_point=DMC_ENTRY_POINT,
                   max_episode_steps=task.max_episode_steps, kwargs={"domain": domain, "task": name})
