"""Safety specs: the shipped ones load and fit their tasks; bad ones fail naming file and field."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spaars_robot.config.tasks import load_task
from spaars_robot.errors import ConfigError, SafetySpecMismatch
from spaars_robot.safety.limits import SafetyLayer
from spaars_robot.safety.spec import load_safety_spec

ROBOTS = ["hopper", "walker2d", "halfcheetah", "ant"]


def base_spec(dim: int = 3) -> dict:
    return {"robot": "toy", "action": {"kind": "torque", "dim": dim, "low": -1.0, "high": 1.0,
                                       "margin": 0.05, "soft_zone": 0.1, "rate_limit": 0.5}}


def write(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("robot", ROBOTS)
def test_shipped_specs_match_their_tasks(robot: str) -> None:
    spec, task = load_safety_spec(robot), load_task(robot)
    spec.check_action_space(task.action_dim)
    spec.check_observation_space(task.obs_dim)
    low, high = spec.action.hard_bounds()
    assert (low > -1).all() and (high < 1).all()


def test_action_dim_mismatch_refuses_with_clear_error() -> None:
    spec = load_safety_spec("hopper")
    with pytest.raises(SafetySpecMismatch, match="action dim 3.*action dim 6"):
        spec.check_action_space(6)
    with pytest.raises(SafetySpecMismatch, match="action dim"):
        SafetyLayer(spec, action_dim=8)


def test_unknown_spec_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="known specs: .*hopper"):
        load_safety_spec("no-such-robot")


@pytest.mark.parametrize("mutate, field, message", [
    (lambda s: s["action"].update(low=[-1.0, -1.0]), "action", "low has 2 entries but action/observation dim is 3"),
    (lambda s: s["action"].update(margin=1.2), "action", "low \\+ margin must be below high - margin"),
    (lambda s: s["action"].update(soft_zone=0.96), "action", "soft_zone must be at most half"),
    (lambda s: s["action"].update(accel_limit=0.1), "action", "not torque"),
    (lambda s: s["action"].update(kind="position", jerk_limit=1.0), "action", "jerk_limit needs accel_limit"),
    (lambda s: s["action"].update(rate_limit=0.0), "action", "rate_limit must be > 0"),
    (lambda s: s["action"].update(soft_stiffness=1.5), "action.soft_stiffness", "less than or equal to 1"),
    (lambda s: s.update(nonfinite="explode"), "nonfinite", "'hold_last', 'zero' or 'reject'"),
    (lambda s: s.update(extra_key=1), "extra_key", "Extra inputs are not permitted"),
    (lambda s: s.update(watchdog={"damp_after_missed": 0}), "watchdog.damp_after_missed", "greater than or equal"),
])
def test_bad_specs_name_file_and_field(tmp_path: Path, mutate, field: str, message: str) -> None:
    spec = base_spec()
    mutate(spec)
    path = write(tmp_path, spec)
    with pytest.raises(ConfigError, match=message) as info:
        load_safety_spec(path)
    assert str(info.value).startswith(f"{path}: {field}")
