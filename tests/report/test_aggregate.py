"""rliable's estimators (report/aggregate.py) on hand-built scores with known answers.

The reference numbers were computed by rliable 1.2.0 itself (arch 7.2.0, pandas 2.3.3, numpy 2.4.6) on the same
runs x tasks matrix: `get_interval_estimates(..., reps=50000, random_state=RandomState(0))` and
`create_performance_profile(..., reps=2000)`. The library is not a dependency (report/aggregate.py says why).
"""
from __future__ import annotations

import numpy as np
import pytest

from spaars_robot.report.aggregate import bootstrap_ci, iqm, mean_of_task_means, score_profile

# 5 runs of 2 tasks, as per-task lists (rliable's matrix is runs x tasks: its columns)
TASKS = [[10.0, 20.0, 30.0, 70.0, 100.0], [40.0, 50.0, 60.0, 80.0, 90.0]]


def test_iqm_is_the_mean_of_the_middle_half_of_all_runs_pooled():
    # pooled: 10 20 30 40 50 60 70 80 90 100 -> drop 2 at each end -> mean(30..80) = 55
    assert iqm([np.array(t) for t in TASKS]) == pytest.approx(55.0)
    assert iqm([np.arange(1.0, 9.0)]) == pytest.approx(4.5)  # 1..8 -> mean(3, 4, 5, 6)
    assert iqm([np.array([1.0, 2.0, 3.0, 1000.0])]) == pytest.approx(2.5)  # one outlying seed does not move it


def test_interval_estimates_match_rliable():
    point, lower, upper = bootstrap_ci(TASKS, iqm)
    assert (float(point), float(lower), float(upper)) == pytest.approx((55.0, 35.0, 76.66666666666667))
    point, lower, upper = bootstrap_ci(TASKS, mean_of_task_means)
    assert (float(point), float(lower), float(upper)) == pytest.approx((55.0, 39.0, 72.0))


def test_performance_profile_matches_rliable():
    taus = np.array([0.0, 25.0, 50.0, 75.0, 100.0])
    point, lower, upper = bootstrap_ci(TASKS, score_profile(taus), reps=2000)
    assert point.tolist() == pytest.approx([1.0, 0.8, 0.5, 0.3, 0.0])
    assert lower.tolist() == pytest.approx([1.0, 0.6, 0.2, 0.0, 0.0])
    assert upper.tolist() == pytest.approx([1.0, 1.0, 0.8, 0.6, 0.0])


def test_tasks_may_have_different_numbers_of_runs_and_the_interval_is_reproducible():
    ragged = [[10.0, 20.0, 30.0, 40.0, 50.0], [60.0, 80.0]]
    first, second = bootstrap_ci(ragged, mean_of_task_means), bootstrap_ci(ragged, mean_of_task_means)
    assert float(first[0]) == pytest.approx((30.0 + 70.0) / 2)
    assert first[1] < first[0] < first[2] and [float(v) for v in first] == [float(v) for v in second]
    with pytest.raises(ValueError, match="at least one run"):
        bootstrap_ci([[1.0], []], iqm)
