"""Build the simulator for a task with its episode limit applied exactly once.

Three kinds of task, one interface: gymnasium MuJoCo envs (`gym.make` with the task's `env_kwargs`), dm-control
suite tasks (`dmc.py`), and gymnasium-robotics goal envs (`goal.py`: the task's `observation_keys` flattened into
one vector), which are built from `env_spec(task)` so that what trains and what a dataset records are one spec.
"""
from __future__ import annotations

from dataclasses import replace

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec

from spaars_robot.config.tasks import TaskSpec
from spaars_robot.envs.mujoco_log import configure_mujoco_logging
from spaars_robot.errors import ConfigError

DMC_ENTRY_POINT = "spaars_robot.envs.dmc:DmControlEnv"
GOAL_ENTRY_POINT = "spaars_robot.envs.goal:make_goal_env"


def make_env(task: TaskSpec, render_mode: str | None = None) -> gym.Env:
    """A gymnasium env for `task`; episodes are cut at `task.max_episode_steps` (reported as truncation)."""
    configure_mujoco_logging()
    if task.observation_keys is not None:
        try:
            env = gym.make(env_spec(task), render_mode=render_mode)
        except (gym.error.Error, ValueError) as exc:
            raise ConfigError(f"task {task.name}: cannot make gymnasium-robotics env {task.env_id!r}: {exc}") from exc
    elif task.backend == "gymnasium":
        try:
            env = gym.make(task.env_id, max_episode_steps=task.max_episode_steps, render_mode=render_mode,
                           **task.env_kwargs)
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
    (importable wherever spaars-robot is installed), with the task's episode limit; a goal env (a task with
    `observation_keys`) becomes a spec whose entry point builds the flattened env (`goal.make_goal_env`).
    """
    if task.observation_keys is not None:
        return EnvSpec(id=f"spaars/{task.name}-v0", entry_point=GOAL_ENTRY_POINT,
                       max_episode_steps=task.max_episode_steps,
                       kwargs={"env_id": task.env_id, "observation_keys": list(task.observation_keys),
                               "env_kwargs": dict(task.env_kwargs)})
    if task.backend == "gymnasium":
        try:
            spec = gym.spec(task.env_id)
        except gym.error.Error as exc:
            raise ConfigError(f"task {task.name}: unknown gymnasium env {task.env_id!r}: {exc}") from exc
        return replace(spec, max_episode_steps=task.max_episode_steps, kwargs={**spec.kwargs, **task.env_kwargs})
    domain, _, name = task.env_id.partition("-")
    return EnvSpec(id=f"spaars/dmc-{task.env_id}-v0", entry_point=DMC_ENTRY_POINT,
                   max_episode_steps=task.max_episode_steps, kwargs={"domain": domain, "task": name})
