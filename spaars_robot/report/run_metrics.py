"""What one run's evaluation curve says: whole-run safety, steps to a target score, area under the curve.

Each curve row after the first covers the `eval.every` online training steps before it (the runner counts
raw actions, out-of-support actions and falls between evaluations, then clears the counters), so averages
over rows are averages over the whole online budget.
"""
from __future__ import annotations

import numpy as np

from spaars_robot.report.runs import Run


def out_of_support_rate(rows: list[dict]) -> float | None:
    """Out-of-support rate over the training steps that evaluation rows cover (equal spans, so the mean of rows);
    None for no rows or an algorithm without a CVAE to score support (sac writes '' in that column)."""
    rates = [r["out_of_support_rate"] for r in rows]
    if not rows or any(v in ("", None) for v in rates):
        return None
    return sum(rates) / len(rates)


def whole_run_safety(run: Run) -> tuple[float | None, int]:
    """(out-of-support rate, falls) over every online step of a run (issue 16: safety kept through the run)."""
    rows = run.online_curve
    return out_of_support_rate(rows), int(sum(r["falls"] for r in rows))


def steps_to_reach(run: Run, target: float) -> int | None:
    """First online evaluation step at which the run's score reaches `target` (None: never)."""
    for row in run.online_curve:
        if row["normalized_mean"] >= target:
            return int(row["step"])
    return None


def raw_share_by_part(runs: list[Run], parts: int = 3) -> list[float | None]:
    """Mean training raw-action share (the gate's firing rate) in `parts` equal slices of the online budget,
    pooled over seeds; None for a slice no run has rows in."""
    shares: list[float | None] = []
    for part in range(parts):
        values = []
        for run in runs:
            rows = run.online_curve
            n = len(rows)
            values += [r["train_raw_rate"] for r in rows[part * n // parts:(part + 1) * n // parts]]
        shares.append(sum(values) / len(values) if values else None)
    return shares


def area_under_curve(run: Run) -> float:
    """Trapezoidal area under the normalised-score curve from the offline start to the last evaluation,
    divided by the steps it spans: the mean score over online training (same units as the score), which
    rewards learning early as well as ending high."""
    steps = np.array([r["step"] for r in run.summary["curve"]], dtype=np.float64)
    scores = np.array([r["normalized_mean"] for r in run.summary["curve"]], dtype=np.float64)
    if len(steps) < 2 or steps[-1] <= steps[0]:
        return float(scores[-1])
    return float(np.trapezoid(scores, steps) / (steps[-1] - steps[0]))


def eval_interval(runs: list[Run]) -> int | None:
    """The online steps between evaluations when every run evaluates on the same schedule, else None."""
    gaps = {int(b["step"]) - int(a["step"]) for run in runs for a, b in zip(run.summary["curve"],
                                                                             run.summary["curve"][1:])}
    return gaps.pop() if len(gaps) == 1 else None
