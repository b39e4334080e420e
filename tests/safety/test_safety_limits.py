"""SafetyLayer: each limit kind fires on a hand-built input, is counted, and computes the right action."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spaars_robot.errors import UnsafeActionError
from spaars_robot.safety.limits import LIMIT_KINDS, SafetyLayer
from spaars_robot.safety.spec import SafetySpec


def make_layer(**overrides) -> SafetyLayer:
    action = {"kind": "torque", "dim": 2, "low": -1.0, "high": 1.0, "margin": 0.1,
              "soft_zone": 0.2, "soft_stiffness": 0.5, "rate_limit": 0.5}
    action.update(overrides.pop("action", {}))
    spec = {"robot": "toy", "action": action,
            "observation": {"dim": 2, "low": -5.0, "high": 5.0, "on_out_of_bounds": "flag"}}
    spec.update(overrides)
    return SafetyLayer(SafetySpec.model_validate(spec))


def test_in_range_action_passes_untouched() -> None:
    layer = make_layer()
    state = layer.new_state()
    result = layer.apply(np.array([0.3, -0.2]), state, observation=np.zeros(2))
    np.testing.assert_allclose(result.action, [0.3, -0.2])
    assert result.limits == () and not result.observation_ood
    assert sum(layer.counts.values()) == 0


def test_soft_zone_pushes_back_by_stiffness() -> None:
    # hard bound 0.9, soft zone starts at 0.7: 0.8 penetrates 0.1, half of it is pushed back -> 0.75
    layer = make_layer(action={"rate_limit": None})
    result = layer.apply(np.array([0.8, -0.8]), layer.new_state())
    np.testing.assert_allclose(result.action, [0.75, -0.75])
    assert result.limits == ("soft_zone",)
    assert layer.counts["soft_zone"] == 1


def test_bounds_clamp_after_soft_zone() -> None:
    # 2.0 -> 0.7 + 0.5 * 1.3 = 1.35 -> clamped to the hard bound 0.9 (limit 1.0 minus margin 0.1)
    layer = make_layer(action={"rate_limit": None})
    result = layer.apply(np.array([2.0, 0.0]), layer.new_state())
    np.testing.assert_allclose(result.action, [0.9, 0.0])
    assert result.limits == ("soft_zone", "bounds")


def test_rate_limit_from_rest_then_per_step() -> None:
    layer = make_layer()
    state = layer.new_state()  # torque: starts from zero torque
    first = layer.apply(np.array([0.6, -0.1]), state)
    np.testing.assert_allclose(first.action, [0.5, -0.1])
    assert first.limits == ("rate",)
    second = layer.apply(np.array([-0.6, -0.1]), state)
    np.testing.assert_allclose(second.action, [0.0, -0.1])
    assert layer.counts["rate"] == 2 and state.counts["rate"] == 2


def test_accel_and_jerk_limits_for_position_actions() -> None:
    layer = make_layer(action={"kind": "position", "soft_zone": 0.0, "rate_limit": 0.5,
                               "accel_limit": 0.1, "jerk_limit": 0.05})
    state = layer.new_state(initial_action=np.zeros(2))
    a1 = layer.apply(np.array([0.05, 0.0]), state)  # d1 = 0.05: within every limit (no accel history yet)
    assert a1.limits == ()
    a2 = layer.apply(np.array([0.4, 0.0]), state)  # d2 = 0.30 > 0.1 -> d1 = 0.05 + 0.1
    assert a2.limits == ("accel",)
    np.testing.assert_allclose(a2.action, [0.2, 0.0])
    a3 = layer.apply(np.array([0.2, 0.0]), state)  # d3 = (0 - 0.15) - 0.1 = -0.25 -> clipped to -0.05
    assert "jerk" in a3.limits
    # jerk-limited: d2 = 0.1 - 0.05 = 0.05, d1 = 0.15 + 0.05 = 0.2 -> a = 0.4, then accel OK, rate OK
    np.testing.assert_allclose(a3.action, [0.4, 0.0])
    assert layer.counts["jerk"] == 1 and layer.counts["accel"] == 1


def test_bound_wins_over_smoothness() -> None:
    layer = make_layer(action={"kind": "position", "soft_zone": 0.0, "rate_limit": 0.5, "accel_limit": 0.05})
    state = layer.new_state(initial_action=np.array([0.5, 0.0]))
    layer.apply(np.array([0.85, 0.0]), state)  # d1 0.35 (no accel history)
    result = layer.apply(np.array([0.9, 0.0]), state)  # accel keeps d1 >= 0.3 -> 1.15, bound clamps to 0.9
    assert result.limits == ("accel", "bounds")
    np.testing.assert_allclose(result.action, [0.9, 0.0])


@pytest.mark.parametrize("policy, expected", [("hold_last", [0.2, 0.1]), ("zero", [0.0, 0.0])])
def test_nonfinite_policy_replaces_action(policy: str, expected: list[float]) -> None:
    layer = make_layer(nonfinite=policy)
    state = layer.new_state()
    layer.apply(np.array([0.2, 0.1]), state)
    result = layer.apply(np.array([np.nan, np.inf]), state)
    np.testing.assert_allclose(result.action, expected)
    assert result.limits == ("nonfinite",)
    assert layer.counts["nonfinite"] == 1


def test_nonfinite_reject_raises_and_counts() -> None:
    layer = make_layer(nonfinite="reject")
    with pytest.raises(UnsafeActionError, match="NaN/inf"):
        layer.apply(np.array([np.nan, 0.0]), layer.new_state())
    assert layer.counts["nonfinite"] == 1


@pytest.mark.parametrize("mode, expected, limits", [("flag", [0.3, 0.3], ()),
                                                    ("hold", [0.1, 0.1], ("observation_bounds",)),
                                                    ("zero", [0.0, 0.0], ("observation_bounds",))])
def test_observation_out_of_bounds(mode: str, expected: list[float], limits: tuple[str, ...]) -> None:
    # `limits` lists what changed the action: a flagged observation is reported by `observation_ood` alone
    layer = make_layer(observation={"dim": 2, "low": -5.0, "high": 5.0, "on_out_of_bounds": mode})
    state = layer.new_state()
    layer.apply(np.array([0.1, 0.1]), state, observation=np.zeros(2))
    result = layer.apply(np.array([0.3, 0.3]), state, observation=np.array([6.0, np.nan]))
    assert result.observation_ood and result.limits == limits
    assert result.held == (mode == "hold")
    np.testing.assert_allclose(result.action, expected)
    assert layer.counts["observation_bounds"] == len(limits)


def _hold_via(how: str, layer: SafetyLayer, state) -> object:
    if how == "nonfinite":
        return layer.apply(np.array([np.nan, 0.0]), state, observation=np.zeros(2))
    if how == "observation":
        return layer.apply(np.array([0.0, 0.0]), state, observation=np.array([9.0, 0.0]))
    return layer.hold(state)


@pytest.mark.parametrize("how", ["nonfinite", "observation", "server"])
def test_a_hold_repeats_the_previous_action_exactly(how: str) -> None:
    # 0.95 enters the soft zone (0.7..0.9) and is applied as 0.7 + 0.5 * 0.25 = 0.825; shaping that again would
    # give 0.7625, 0.73125, ... (the creep issue 17 found). A hold must answer 0.825 every time.
    layer = make_layer(nonfinite="hold_last", action={"rate_limit": None},
                       observation={"dim": 2, "low": -5.0, "high": 5.0, "on_out_of_bounds": "hold"})
    state = layer.new_state()
    applied = layer.apply(np.array([0.95, -0.3]), state, observation=np.zeros(2)).action
    np.testing.assert_allclose(applied, [0.825, -0.3])
    for _ in range(4):
        result = _hold_via(how, layer, state)
        assert result.held
        assert "soft_zone" not in result.limits
        np.testing.assert_array_equal(result.action, applied)


def test_a_hold_before_any_action_answers_zeros_through_the_limits() -> None:
    layer = make_layer(action={"kind": "position", "low": 0.5, "high": 1.5, "margin": 0.0, "soft_zone": 0.0,
                               "rate_limit": None})
    result = layer.hold(layer.new_state())
    assert result.held and result.limits == ("bounds",)
    np.testing.assert_allclose(result.action, [0.5, 0.5])


def test_every_limit_kind_is_counted() -> None:
    assert set(make_layer().counts) == set(LIMIT_KINDS)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=2, max_size=2),
                min_size=1, max_size=20))
def test_output_always_within_hard_bounds_and_rate(actions: list[list[float]]) -> None:
    layer = make_layer(nonfinite="hold_last")
    state = layer.new_state()
    previous = np.zeros(2)
    for action in actions:
        out = layer.apply(np.array(action), state).action
        assert np.isfinite(out).all()
        assert (out >= layer.hard_low - 1e-12).all() and (out <= layer.hard_high + 1e-12).all()
        assert (np.abs(out - previous) <= 0.5 + 1e-12).all()
        previous = out
