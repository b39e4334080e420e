"""What one run's curve says: area under the curve, steps to a target, whole-run safety, raw share by thirds."""
from __future__ import annotations

from pathlib import Path

import pytest

from spaars_robot.report.run_metrics import (
    area_under_curve,
    eval_interval,
    raw_share_by_part,
    steps_to_reach,
    whole_run_safety,
)
from spaars_robot.report.runs import Run


def _run(scores: list[float], raw: list[float] | None = None, oos: list | None = None, falls: int = 1) -> Run:
    curve = [{"step": 5000 * i, "normalized_mean": v, "train_raw_rate": (raw or [0.0] * len(scores))[i],
              "out_of_support_rate": (oos or [0.1] * len(scores))[i], "falls": falls} for i, v in enumerate(scores)]
    return Run({"task": "hopper", "algo": "spaars", "protocol": "short", "seed": 0, "curve": curve,
                "variant": {"concurrent_bc": True, "hard_switch": False}}, Path("x.json"))


def test_area_under_a_straight_line_is_its_mean():
    assert area_under_curve(_run([0.0, 50.0, 100.0])) == pytest.approx(50.0)
    assert area_under_curve(_run([0.0, 100.0, 100.0])) == pytest.approx(75.0)  # learning early counts
    assert area_under_curve(_run([42.0])) == pytest.approx(42.0)


def test_steps_to_reach_ignores_the_offline_start():
    run = _run([90.0, 10.0, 60.0, 95.0])
    assert steps_to_reach(run, 50.0) == 10_000 and steps_to_reach(run, 95.0) == 15_000
    assert steps_to_reach(run, 99.0) is None
    assert eval_interval([run]) == 5000


def test_whole_run_safety_and_raw_share_by_thirds():
    run = _run([0, 1, 2, 3, 4, 5, 6], raw=[0, 0, 0, 0.5, 0.5, 1, 1], oos=[0, 0.1, 0.2, 0.3, 0.1, 0.2, 0.3])
    rate, falls = whole_run_safety(run)
    assert rate == pytest.approx(0.2) and falls == 6  # the offline-start row is not an online window
    assert raw_share_by_part([run]) == pytest.approx([0.0, 0.5, 1.0])
    assert whole_run_safety(_run([0, 1], oos=["", ""]))[0] is None  # sac: no CVAE, no support score
