"""Soft joint limits for torque commands (ros_control's effort soft limits): the bound follows the joint's state.

Hand-built states check the arithmetic and the order of operations; the last test runs the real MuJoCo hopper
with `safety/hopper-joint-limits.yaml` in the loop and checks that the joint the limits protect stays off its stop.
"""
from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from spaars_robot.errors import SafetySpecMismatch
from spaars_robot.safety.limits import SafetyLayer
from spaars_robot.safety.spec import SafetySpec, load_safety_spec
from tests.conftest import REPO

JOINTS = {"position_index": [0, 1], "velocity_index": [2, 3], "lower": -1.0, "upper": 1.0,
          "k_position": 10.0, "k_velocity": 0.5, "max_velocity": 4.0}


def make_layer(joints: dict | None = None, **action) -> SafetyLayer:
    spec = {"robot": "toy", "action": {"kind": "torque", "dim": 2, "low": -1.0, "high": 1.0, "margin": 0.0,
                                       "joint_limits": JOINTS if joints is None else joints, **action},
            "observation": {"dim": 4, "low": -50.0, "high": 50.0}}
    return SafetyLayer(SafetySpec.model_validate(spec))


def obs(q0: float, q1: float, dq0: float = 0.0, dq1: float = 0.0) -> np.ndarray:
    return np.array([q0, q1, dq0, dq1])


def test_far_from_the_limits_at_moderate_speed_nothing_acts() -> None:
    layer = make_layer()
    # v allowed = clip(10 * 1.0, +-4) = 4 each way; effort bound 0.5 * (4 -+ 1) >= 1 at |dq| <= 2
    result = layer.apply(np.array([0.95, -0.95]), layer.new_state(), obs(0.0, 0.0, 1.5, -1.5))
    np.testing.assert_allclose(result.action, [0.95, -0.95])
    assert result.limits == ()


def test_torque_towards_a_close_limit_is_cut_and_past_it_the_joint_is_braked() -> None:
    layer = make_layer()
    # joint 0 is 0.05 below its upper limit moving up at 1 rad/s: v allowed 0.5, bound 0.5 * (0.5 - 1) = -0.25
    # joint 1 is 0.1 past its lower limit at rest: v_low = clip(-10 * (-1.1 + 1)) = 1, bound low 0.5 * (1 - 0) = 0.5
    result = layer.apply(np.array([0.8, -0.8]), layer.new_state(), obs(0.95, -1.1, 1.0, 0.0))
    np.testing.assert_allclose(result.action, [-0.25, 0.5])
    assert result.limits == ("joint_limits",)
    assert layer.counts["joint_limits"] == 1
    # away from the limit the same joints may push freely
    free = layer.apply(np.array([-0.8, 0.8]), layer.new_state(), obs(0.95, -1.1, 1.0, 0.0))
    np.testing.assert_allclose(free.action, [-0.8, 0.8])


def test_a_joint_with_an_unknown_state_gets_zero_torque_the_others_are_untouched() -> None:
    layer = make_layer()
    result = layer.apply(np.array([0.6, -0.6]), layer.new_state(), obs(np.nan, 0.0, 0.0, 0.0))
    np.testing.assert_allclose(result.action, [0.0, -0.6])
    assert result.limits == ("joint_limits",)


def test_the_rate_limit_cannot_carry_a_torque_past_the_effort_bound() -> None:
    layer = make_layer(rate_limit=0.3)
    state = layer.new_state()
    for _ in range(4):  # ramp up to 0.9 from rest, far from the limits
        layer.apply(np.array([0.9, 0.0]), state, obs(0.0, 0.0))
    # now at the upper limit moving up: the bound is -0.5 * 1 = -0.5, 1.4 below the last torque (rate 0.3 per step)
    result = layer.apply(np.array([0.9, 0.0]), state, obs(1.0, 0.0, 1.0, 0.0))
    assert result.action[0] == pytest.approx(-0.5)
    assert "joint_limits" in result.limits


def test_a_hold_repeats_the_torque_but_still_inside_this_steps_bound() -> None:
    layer = make_layer()  # the spec default: a NaN action holds the last one
    state = layer.new_state()
    layer.apply(np.array([0.7, 0.2]), state, obs(0.0, 0.0))
    held = layer.apply(np.array([np.nan, np.nan]), state, obs(0.98, 0.0, 1.0, 0.0))
    assert held.held and held.limits == ("nonfinite", "joint_limits")
    np.testing.assert_allclose(held.action, [0.5 * (10 * 0.02 - 1.0), 0.2])
    with pytest.raises(SafetySpecMismatch, match="need the observation"):
        layer.apply(np.array([0.1, 0.1]), state)


@pytest.mark.parametrize("change, message", [
    ({"kind": "position"}, "bound torque commands"),
    ({"joint_limits": {**JOINTS, "position_index": [0]}}, "position_index has 1 entries"),
    ({"joint_limits": {**JOINTS, "lower": 1.0}}, "lower must be below"),
    ({"joint_limits": {**JOINTS, "k_velocity": 0.0}}, "k_velocity must be > 0"),
    ({"joint_limits": {**JOINTS, "velocity_index": [2, 7]}}, "observation index 7, but observation.dim is 4"),
    ({"low": 0.1}, "hard torque range around 0"),
])
def test_inconsistent_joint_limits_are_refused_when_the_spec_is_read(change: dict, message: str) -> None:
    action = {"kind": "torque", "dim": 2, "low": -1.0, "high": 1.0, "joint_limits": JOINTS} | change
    with pytest.raises(ValidationError, match=message):
        SafetySpec.model_validate({"robot": "toy", "action": action,
                                   "observation": {"dim": 4, "low": -50.0, "high": 50.0}})


def test_a_spec_reading_joint_state_beyond_the_bundles_observation_is_refused_at_start() -> None:
    spec = SafetySpec.model_validate({"robot": "toy", "action": {"kind": "torque", "dim": 2, "low": -1.0,
                                                                  "high": 1.0, "joint_limits": JOINTS}})
    with pytest.raises(SafetySpecMismatch, match="observation index 3, but the bundle has observation dim 3"):
        SafetyLayer(spec, action_dim=2, obs_dim=3)
    with pytest.raises(SafetySpecMismatch, match="read observation index 3"):
        SafetyLayer(spec).apply(np.zeros(2), SafetyLayer(spec).new_state(), np.zeros(3))


def _pushed_joint(task: str, spec_file: str, dim: int, steps: int) -> dict[str, np.ndarray]:
    """Full positive torque on one action dim of the real robot from its reset pose, free and under the spec: the
    trace of that joint's position (the spec's own observation index) over the first `steps` steps."""
    from spaars_robot.config.tasks import load_task
    from spaars_robot.envs.make import make_env
    from spaars_robot.safety.env_wrapper import SafetyLayerEnv

    spec = load_safety_spec(REPO / "safety" / spec_file)
    robot = load_task(task)
    index = spec.action.joint_limits.position_index[dim]
    push = np.zeros(robot.action_dim, dtype=np.float32)
    push[dim] = 1.0
    traces = {}
    for name, wrap in (("free", False), ("limited", True)):
        env = make_env(robot)
        if wrap:
            env = SafetyLayerEnv(env, SafetyLayer(spec, robot.action_dim, robot.obs_dim))
        env.reset(seed=0)
        trace = []
        for _ in range(steps):
            observation, _, terminated, truncated, _ = env.step(push)
            assert not (terminated or truncated)
            trace.append(float(observation[index]))
        env.close()
        traces[name] = np.array(trace)
    return traces


def test_in_mujoco_the_knee_is_eased_onto_its_soft_limit_without_overshoot() -> None:
    """Full knee-extension torque on the real hopper. Without the layer the knee sits pressed on its stop (0 rad);
    under `safety/hopper-joint-limits.yaml` it glides down to the soft limit 5 degrees short of the stop and holds
    there. With gains too stiff for the 8 ms control period (the PR2 URDF's k_position 100, k_velocity 0.5) it
    overshot to -0.143 and bounced, which is what the spec's gains are derived to avoid."""
    upper = load_safety_spec(REPO / "safety" / "hopper-joint-limits.yaml").action.joint_limits.vector("upper", 3)[1]
    knee = _pushed_joint("hopper", "hopper-joint-limits.yaml", 1, 14)  # the lone push topples it after ~17 steps
    assert (knee["free"] > -0.01).all(), knee["free"]  # pressed on the stop
    limited = knee["limited"]
    assert (np.diff(limited) < 0.002).all(), limited  # a glide, no bounce
    assert abs(limited[-1] - upper) < 0.005 and limited.min() > upper - 0.01, (limited, upper)


def test_in_mujoco_walker2d_s_light_foot_stops_at_its_soft_limit_where_free_it_passes_its_stop() -> None:
    """Full foot torque on the real walker2d. Its foot is light (joint-space inertia 0.066 against the thigh's 4.65),
    so MuJoCo's soft joint limit lets it swing 0.38 rad past the model's +45 degrees; under
    `safety/walker2d-joint-limits.yaml` (its per-joint velocity gains derived from those inertias) it glides onto the
    soft limit 5 degrees inside the range and stays within a degree of it. With hopper's single gain (0.2, a per-step
    gain of 2.4 on this foot) it chatters between 0.61 and 0.69 rad, with 0.5 it passes the stop: both fail here."""
    upper = load_safety_spec(REPO / "safety" / "walker2d-joint-limits.yaml").action.joint_limits.vector("upper", 6)[2]
    foot = _pushed_joint("walker2d", "walker2d-joint-limits.yaml", 2, 16)  # it topples after ~18 steps
    assert foot["free"].max() > np.deg2rad(45) + 0.3, foot["free"]  # far past the model's range
    limited = foot["limited"]
    assert limited.max() < upper + np.deg2rad(1) and abs(limited[-1] - upper) < np.deg2rad(1), (limited, upper)
