"""Which safety spec a training run applies in the loop, and the env factory that applies it.

`train --safety-spec NAME|PATH|none`; by default the task's own spec (`safety/<task>.yaml`) when it exists,
because that is the spec `export` records and `serve` enforces: a policy should meet its limits in training,
not for the first time on the robot. The spec's SHA-256 is recorded in the run config when the run starts; a
resume refuses a spec whose bytes changed (the run would continue under different limits than it began).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np

from spaars_robot.config.tasks import TaskSpec
from spaars_robot.config.training import TrainConfig
from spaars_robot.envs import make_env
from spaars_robot.errors import SpaarsError
from spaars_robot.export.safety_binding import spec_path, spec_sha256
from spaars_robot.safety.env_wrapper import SafetyLayerEnv
from spaars_robot.safety.limits import SafetyLayer
from spaars_robot.safety.spec import load_safety_spec

NO_SPEC = "none"


def resolve_training_spec(task: TaskSpec, given: str | None) -> tuple[str | None, str | None]:
    """(spec path, SHA-256) for `--safety-spec given`, or (None, None) for `none` / a task with no spec.

    The spec must fit the task (action and observation dims, action names and range), checked here so a mismatch is one line
    before any compute rather than an error at the first online step.
    """
    if given is not None and given.lower() == NO_SPEC:
        return None, None
    path = spec_path(given if given is not None else task.name)
    if not path.exists():
        if given is None:
            return None, None  # the task has no spec of its own: train without a layer, as before
        raise SpaarsError(f"--safety-spec {given}: no such spec ({path})")
    spec = load_safety_spec(path)
    spec.check_action_space(task.action_dim, f"task {task.name}")
    spec.check_observation_space(task.obs_dim, f"task {task.name}")
    # names and range as export checks them (policies act in [-1, 1]), else export refuses the spec after the training
    spec.check_action_names(task.names()[1], f"task {task.name}")
    spec.check_action_range(np.full(task.action_dim, -1.0), np.full(task.action_dim, 1.0), f"task {task.name}")
    return str(path.resolve()), spec_sha256(path)


def check_unchanged(config: TrainConfig) -> None:
    """A resumed run continues under the limits it began with, or says which file changed."""
    if config.safety_spec is None:
        return
    path = Path(config.safety_spec)
    if not path.exists():
        raise SpaarsError(f"the run trains under safety spec {path}, which no longer exists; restore it to resume")
    if spec_sha256(path) != config.safety_spec_sha256:
        raise SpaarsError(f"safety spec {path} changed since the run started (sha256 {config.safety_spec_sha256[:12]}"
                          f"... then, {spec_sha256(path)[:12]}... now); restore it, or start a new run")


def env_factory(config: TrainConfig, task: TaskSpec) -> Callable[[], gym.Env]:
    """make_env(task), wrapped in the run's safety layer when it has one: training and evaluation use it alike."""
    return spec_env_factory(task, config.safety_spec)


def spec_env_factory(task: TaskSpec, spec_file: str | None) -> Callable[[], gym.Env]:
    """make_env(task) behind the SafetyLayer of `spec_file` (None: no layer); training runs and data collection
    under a spec (`data collect --safety-spec`) build their environments here, so both apply the same layer."""
    if spec_file is None:
        return lambda: make_env(task)
    spec = load_safety_spec(Path(spec_file))

    def make() -> gym.Env:
        return SafetyLayerEnv(make_env(task), SafetyLayer(spec, task.action_dim, task.obs_dim))

    return make
