"""Scores across seeds and tasks, the way rliable reports them (Agarwal et al., NeurIPS 2021, "Deep
Reinforcement Learning at the Edge of the Statistical Precipice"; github.com/google-research/rliable 1.2.0).

- Interquartile mean (IQM): the mean of the middle 50 % of all runs of all tasks pooled, i.e.
  `scipy.stats.trim_mean(scores, 0.25)` over the flattened runs x tasks matrix (rliable `metrics.aggregate_iqm`).
  Less sensitive to one outlying seed than the mean, far less noisy than the median.
- Mean: the mean over tasks of each task's mean over runs (rliable `metrics.aggregate_mean`).
- Stratified bootstrap CI: resample the runs of each task with replacement, independently per task (the tasks
  are fixed, the seeds are the sample), recompute the statistic, take the 2.5 / 97.5 percentiles of the
  replicates (rliable `library.StratifiedBootstrap`, `get_interval_estimates(method='percentile')`, 50,000
  replicates by default; 2,000 for profiles).
- Performance profile (score distribution): for each threshold tau, the fraction of all runs of all tasks
  whose score exceeds tau (rliable `library.create_performance_profile`, `run_score_deviation`).

Why not the library itself (rliable==1.2.0, tried 2026-12-02 in a separate venv with this project's numpy==2.4.6
and scipy==1.17.1): it requires `arch>=5.3.1,<8.0`, which resolves to arch 7.2.0; with the pandas the resolver
picks (3.1.1) `import rliable.library` fails (`TypeError: deprecate_kwarg() missing 1 required positional
argument` inside arch), and works only with pandas pinned below 3. It also brings pandas, statsmodels, seaborn,
arch, patsy and formulaic into a package that is installed on robots, for the ~40 lines below. The estimators
here are checked against numbers rliable 1.2.0 computed on the same inputs (tests/report/test_aggregate.py).
Unlike rliable, tasks may have different numbers of runs (the committed ablations have 2 seeds, the main grid 5).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import trim_mean

BOOTSTRAP_REPS = 50_000
PROFILE_REPS = 2_000

# a statistic of per-task score arrays shaped [..., runs of that task] -> [...] or [..., k]
Statistic = Callable[[Sequence[np.ndarray]], np.ndarray]


def iqm(per_task: Sequence[np.ndarray]) -> np.ndarray:
    """Interquartile mean of all runs of all tasks pooled (along the last axis)."""
    return trim_mean(np.concatenate(per_task, axis=-1), proportiontocut=0.25, axis=-1)


def mean_of_task_means(per_task: Sequence[np.ndarray]) -> np.ndarray:
    """Mean over tasks of each task's mean score over its runs."""
    return np.mean([x.mean(axis=-1) for x in per_task], axis=0)


def score_profile(taus: np.ndarray) -> Statistic:
    """The statistic 'fraction of all runs scoring above each tau', for `bootstrap_ci`."""
    def fraction_above(per_task: Sequence[np.ndarray]) -> np.ndarray:
        pooled = np.concatenate(per_task, axis=-1)
        return (pooled[..., None] > taus).mean(axis=-2)
    return fraction_above


def bootstrap_ci(per_task: Sequence[Sequence[float]], statistic: Statistic, reps: int = BOOTSTRAP_REPS,
                 confidence: float = 0.95, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point estimate, lower, upper) of `statistic` with a stratified-bootstrap percentile interval.

    Seeded, so a report regenerated from the same summaries prints the same interval.
    """
    samples = [np.asarray(x, dtype=np.float64) for x in per_task]
    if not samples or any(len(x) == 0 for x in samples):
        raise ValueError("every task needs at least one run")
    rng = np.random.default_rng(seed)
    replicates = [x[rng.integers(0, len(x), size=(reps, len(x)))] for x in samples]
    values = np.asarray(statistic(replicates))
    tail = 100 * (1 - confidence) / 2
    lower, upper = np.percentile(values, [tail, 100 - tail], axis=0)
    point = np.asarray(statistic([x[None, :] for x in samples]))[0]
    return point, lower, upper
