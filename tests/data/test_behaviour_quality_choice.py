"""Which evaluation of a behaviour run becomes the `medium` policy: the task's band is the definition.

Measured on this project's AMD EPYC machine: the hopper SAC run evaluated 24.4, 29.8, then 93.8 ten thousand steps
later; the first evaluation at the target (33) was an expert policy and the dataset labelled `medium` scored ~90.
"""
from __future__ import annotations

import pytest

from spaars_robot.config.tasks import load_task
from spaars_robot.errors import SpaarsError
from spaars_robot.train.collect import BehaviourRun, CollectConfig


def run_with(tmp_path, curve: list[float], medium_at: int | None) -> BehaviourRun:
    run = BehaviourRun(tmp_path, load_task("hopper"), CollectConfig(steps=1, seed=0, train_budget=1_000),
                       progress=None)
    run.evals = [{"step": 10_000 * (i + 1), "normalized": v, "return_mean": 0.0} for i, v in enumerate(curve)]
    run.medium_step = None if medium_at is None else 10_000 * (medium_at + 1)
    return run


def test_first_evaluation_at_the_target_is_medium_when_it_lies_in_the_band(tmp_path) -> None:
    assert run_with(tmp_path, [7.5, 24.4, 35.5, 60.0], medium_at=2).chosen_step("medium") == 30_000


def test_an_overshoot_past_the_band_falls_back_to_the_in_band_checkpoint_nearest_the_target(tmp_path) -> None:
    # hopper's band is [20, 60], target 33: 29.8 (step 60k) is nearer than 24.4; 93.8 is an expert policy
    run = run_with(tmp_path, [7.5, 10.1, 13.8, 17.7, 24.4, 29.8, 93.8], medium_at=6)
    assert run.chosen_step("medium") == 60_000
    assert run.chosen_step("expert") == 70_000  # the expert choice is unchanged: the best evaluation


def test_a_run_that_jumps_over_the_whole_band_is_refused_not_mislabelled(tmp_path) -> None:
    with pytest.raises(SpaarsError, match=r"jumped past the medium band \[20.0, 60.0\].*eval-every"):
        run_with(tmp_path, [7.5, 12.0, 88.0], medium_at=2).chosen_step("medium")


def test_a_run_that_never_reached_the_target_keeps_its_best_evaluation(tmp_path) -> None:
    assert run_with(tmp_path, [7.5, 16.0, 12.0], medium_at=None).chosen_step("medium") == 20_000
