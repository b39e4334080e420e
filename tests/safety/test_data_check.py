"""spec_on_data: a dataset's own action sequences replayed through the layer a run trains and serves under."""
from __future__ import annotations

import numpy as np
import pytest

from spaars_robot.safety.data_check import SAY_ABOVE, describe, spec_on_data
from spaars_robot.safety.spec import SafetySpec

# hard bound 0.9, soft zone from 0.7, half the penetration pushed back; rate 0.5 per step from zero torque
SPEC = SafetySpec.model_validate({
    "robot": "toy",
    "action": {"kind": "torque", "dim": 2, "low": -1.0, "high": 1.0, "margin": 0.1, "soft_zone": 0.2,
               "soft_stiffness": 0.5, "rate_limit": 0.5},
    "observation": {"dim": 2, "low": -5.0, "high": 5.0, "on_out_of_bounds": "flag"}})


def _check(episodes: list[list[list[float]]], **kwargs) -> dict:
    actions = np.array([a for ep in episodes for a in ep], dtype=np.float32)
    lengths = np.array([len(ep) for ep in episodes])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return spec_on_data(SPEC, np.zeros((len(actions), 2), np.float32), actions, starts, lengths, **kwargs)


def test_data_inside_the_spec_is_left_alone_and_said_to_agree() -> None:
    result = _check([[[0.1, -0.2], [0.3, 0.0], [0.5, -0.4]]] * 3)
    assert result == {"steps": 9, "episodes": 3, "changed_share": 0.0, "by_limit": {}, "mean_abs_change": 0.0,
                      "max_abs_change": 0.0}
    assert "disagree" not in describe(result, "toy.yaml", "toy-data")


def test_soft_zone_and_rate_are_counted_per_step_with_the_change_they_make() -> None:
    # step 0: 0.4 from rest passes; step 1: 0.8 is in the soft zone -> 0.75 (|change| 0.05), within the rate;
    # step 2: -0.4 after 0.75 moves 1.15 > 0.5 -> rate limited to 0.25 (|change| 0.65)
    result = _check([[[0.4, 0.0], [0.8, 0.0], [-0.4, 0.0]]])
    assert result["steps"] == 3 and result["changed_share"] == pytest.approx(2 / 3)
    assert result["by_limit"] == {"soft_zone": pytest.approx(1 / 3), "rate": pytest.approx(1 / 3)}
    assert result["mean_abs_change"] == pytest.approx((0.05 + 0.65) / 6)
    assert result["max_abs_change"] == pytest.approx(0.65)
    assert "disagree" in describe(result, "toy.yaml", "toy-data") and result["changed_share"] > SAY_ABOVE


def test_each_episode_starts_from_rest_and_whole_episodes_are_replayed_up_to_the_cap() -> None:
    # a fresh layer state per episode: the second episode's -0.45 starts from rest (0.45 away, within the rate 0.5);
    # as one episode it would follow 0.45 (0.9 away) and be rate-limited
    first, second = [[0.45, 0.0], [0.45, 0.0]], [[-0.45, 0.0], [-0.45, 0.0]]
    assert _check([first, second])["changed_share"] == 0.0  # fresh state: -0.45 from rest is within 0.5
    assert _check([first + second])["by_limit"] == {"rate": 0.25}  # one episode: 0.9 in one step is limited
    capped = _check([first, second, first], max_steps=3)
    assert capped["episodes"] == 2 and capped["steps"] == 4  # whole episodes: the cap stops before the next one


def test_joint_limits_report_the_share_of_steps_each_joint_sits_beyond_its_soft_limits() -> None:
    # joint 0 reads obs[0], joint 1 obs[1] (velocities obs[2:4], zero); soft limits [-1, 1] on both
    spec = SafetySpec.model_validate({
        "robot": "toy",
        "action": {"kind": "torque", "dim": 2, "low": -1.0, "high": 1.0, "margin": 0.0, "soft_zone": 0.0,
                   "joint_limits": {"position_index": [0, 1], "velocity_index": [2, 3], "lower": -1.0, "upper": 1.0,
                                    "k_position": 25.0, "k_velocity": 0.2, "max_velocity": 10.0}},
        "observation": {"dim": 4, "low": -5.0, "high": 5.0, "on_out_of_bounds": "flag"}})
    # joint 0 beyond on 3 of 4 steps (two above, one below), joint 1 never; past a limit the layer acts either
    # way: 0.5 pushing past the upper one is cut, and past the lower one it is raised to the restoring torque
    positions = [[1.5, 0.0], [0.0, 0.5], [2.0, -0.5], [-1.2, 0.5]]
    observations = np.array([p + [0.0, 0.0] for p in positions], np.float32)
    actions = np.full((4, 2), 0.5, np.float32)
    result = spec_on_data(spec, observations, actions, np.array([0]), np.array([4]))
    assert result["beyond_soft_limits"] == [pytest.approx(0.75), 0.0]
    assert result["by_limit"] == {"joint_limits": pytest.approx(0.75)}  # the steps beyond, and only those
    assert "joints beyond their soft limits on 75.0 / 0.0 % of steps" in describe(result, "toy.yaml", "toy-data")
    assert "beyond_soft_limits" not in _check([[[0.1, 0.0]]])  # no joint limits in the spec: no posture


def test_data_info_replays_a_dataset_through_a_spec_and_refuses_a_spec_of_another_robot(tiny_hopper_dataset):
    from tests.conftest import run_cli

    ok = run_cli("data", "info", str(tiny_hopper_dataset), "--safety-spec", "hopper")
    assert "safety spec hopper.yaml on spaars/hopper-medium-v0's actions: changes " in ok.stdout
    assert "% of 3000 steps" in ok.stdout
    for spec, message in (("walker2d", "is for action dim 6"), ("nope", "--safety-spec nope: no such spec")):
        bad = run_cli("data", "info", str(tiny_hopper_dataset), "--safety-spec", spec, check=False)
        assert bad.returncode != 0 and message in bad.stdout + bad.stderr and "Traceback" not in bad.stderr
