"""Fixtures for the runtime: random-weight Hopper bundles exported for real, and live servers on real sockets."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from spaars_robot.config.tasks import TaskSpec, load_task
from spaars_robot.export.bundle import Bundle, load_bundle
from spaars_robot.export.onnx_export import export_bundle
from spaars_robot.export.safety_binding import bind_spec
from spaars_robot.export.stack import PolicyStack, random_stack
from spaars_robot.runtime.server import ActionServer
from spaars_robot.safety.limits import SafetyLayer
from tests.runtime.runtime_helpers import ACT_DIM, OBS_DIM, hopper_info, serving

os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(scope="session")
def stack() -> PolicyStack:
    return random_stack(OBS_DIM, ACT_DIM, seed=0)


@pytest.fixture(scope="session")
def make_bundle(tmp_path_factory, stack) -> Callable[..., Bundle]:
    """Export `stack` (or another) with info overrides into a fresh directory and load it."""
    def make(stack_: PolicyStack | None = None, support_hysteresis: float | None = None, **overrides) -> Bundle:
        out = tmp_path_factory.mktemp("bundle") / "hopper-test"
        export_bundle(stack_ or stack, hopper_info(**overrides), out, support_hysteresis=support_hysteresis)
        return load_bundle(out)
    return make


@pytest.fixture(scope="session")
def bundle(make_bundle) -> Bundle:
    return make_bundle()


@pytest.fixture(scope="session")
def hopper() -> TaskSpec:
    return load_task("hopper")


@pytest.fixture
def live_server(bundle) -> Iterator[ActionServer]:
    """The server as `serve` runs it: the bundle under its recorded safety spec (safety/hopper.yaml)."""
    layer = SafetyLayer(bind_spec(bundle.manifest, None).spec, ACT_DIM, OBS_DIM)
    with serving(ActionServer(bundle, ["tcp://127.0.0.1:*"], safety=layer)) as server:
        yield server
