"""The report's figures, sized for a README (800 px wide at 100 dpi), one panel per task.

- learning curves: mean D4RL-normalised score over online steps with the 95 % t-interval over seeds as a band
  (the SPAARS paper's figure 4);
- gate: the share of raw actions over training, and the mean |advantage| the gate compares when run
  directories recorded it (the paper's figure 2);
- performance profile: the fraction of runs whose final score exceeds each threshold, with stratified
  bootstrap bands (rliable's score distribution, `report/aggregate.py`).

Every curve uses the label's colour in every figure, so a reader matches them across figures.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spaars_robot.report.aggregate import PROFILE_REPS, bootstrap_ci, score_profile
from spaars_robot.report.runs import Run, has_online_steps
from spaars_robot.report.tables import Groups
from spaars_robot.train.plots import seed_matrix
from spaars_robot.train.summaries import mean_ci95

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WIDTH_IN, DPI = 8.0, 100  # 800 px: README width


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8})
    return plt


def colours(labels: list[str]) -> dict[str, str]:
    """One colour per label, the same in every figure of a report."""
    palette = [f"C{i}" for i in range(10)]
    return {label: palette[i % len(palette)] for i, label in enumerate(labels)}


def _tasks(groups: Groups) -> list[str]:
    return sorted({task for task, _, _ in groups})


def _axes(plt, rows: int, tasks: list[str], height_per_row: float):
    cols = min(len(tasks), 3)
    grid_rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows * grid_rows, cols, figsize=(WIDTH_IN, height_per_row * rows * grid_rows),
                             squeeze=False)
    for extra in range(len(tasks), cols * grid_rows):  # empty cells of the last grid row
        for row in range(rows):
            axes[(extra // cols) * rows + row, extra % cols].set_visible(False)
    return fig, lambda task_index, row: axes[(task_index // cols) * rows + row, task_index % cols]


def _band(ax, steps: list[int], per_seed: np.ndarray, colour: str, label: str) -> None:
    """Mean over seeds and its 95 % t-interval (no band for one seed)."""
    stats = [mean_ci95(list(per_seed[:, i])) for i in range(len(steps))]
    mean = np.array([m for m, _ in stats])
    half = np.nan_to_num(np.array([h for _, h in stats]))
    x = np.array(steps) / 1000
    ax.plot(x, mean, color=colour, label=label, lw=1.5)
    if per_seed.shape[0] > 1:
        ax.fill_between(x, mean - half, mean + half, color=colour, alpha=0.12, lw=0)


def _clip_to_seeds(ax, values: list[float]) -> None:
    """Axes span the per-seed values: a 2-seed t-band reaches far past any score a seed had."""
    if values:
        lo, hi = min(values), max(values)
        pad = 0.05 * (hi - lo or 1.0)
        ax.set_ylim(lo - pad, hi + pad)


def learning_curves(groups: Groups, labels: list[str]) -> Figure:
    """Score over online steps per task, one line and band per label."""
    plt = _pyplot()
    tasks, colour = _tasks(groups), colours(labels)
    fig, ax_of = _axes(plt, 1, tasks, 3.2)
    for i, task in enumerate(tasks):
        ax, seen, drawn = ax_of(i, 0), [], set()
        for (g_task, protocol, label), runs in groups.items():
            if g_task != task or label not in colour or not has_online_steps(runs):
                continue  # an `offline` group has one point, no curve
            steps, per_seed = seed_matrix([r.summary["curve"] for r in runs], "normalized_mean")
            _band(ax, steps, per_seed, colour[label], f"{label} (n={len(runs)})")
            seen += list(per_seed.ravel())
            drawn.add(protocol)
        _clip_to_seeds(ax, seen)
        ax.set_title(f"{task} ({', '.join(sorted(drawn))} protocol)")
        ax.set_xlabel("online environment steps (thousands)")
        ax.set_ylabel("D4RL-normalised score")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle("Learning curves: mean over seeds, 95% t-interval band (step 0: the offline policy)")
    fig.tight_layout()
    return fig


def _has_gate(runs: list[Run]) -> bool:
    """The gate decided something in these runs: their raw share is neither always 0 nor always 1."""
    shares = {r["train_raw_rate"] for run in runs for r in run.online_curve}
    return not shares <= {0.0, 1.0}


def _advantage_rows(runs: list[Run]) -> tuple[list[list[dict]], str] | None:
    """Per-evaluation advantage rows of every run and the field to draw, None if any run lacks one.

    The signed mean advantage `adv_mean` (paper figure 2) from the summary's curve or the run directory's
    metrics.csv where the run recorded it (runs since 2026-12-02); else the unsigned `adv_scale` from metrics.csv.
    """
    for key in ("adv_mean", "adv_scale"):
        per_run = []
        for run in runs:
            rows = [r for r in run.summary["curve"] if r.get(key) not in (None, "")] if key == "adv_mean" else []
            if not rows:
                rows = [r for r in (run.metrics_rows() or []) if r.get(key) not in (None, "")]
            if not rows:
                break
            per_run.append(rows)
        else:
            return per_run, key
    return None


def gate_figure(groups: Groups, labels: list[str]) -> tuple[Figure | None, bool]:
    """(figure, or None when no run of `labels` has a gate; whether the mean-|advantage| row could be drawn).

    Runs since 2026-12-02 record the signed mean advantage `adv_mean` at each evaluation (algos/spaars.py
    `after_eval`: over the last 2,000 online states, the mean of the ensemble-mean Q(s, a_raw) - Q(s, a_latent)), in
    their summary's curve: the paper's figure 2. Earlier compact summaries record neither; their run directories'
    metrics.csv has the unsigned `adv_scale` (the mean of |that difference|), drawn when no signed value exists.
    """
    gated = {k: runs for k, runs in groups.items() if k[2] in labels and _has_gate(runs)}
    if not gated:
        return None, False
    advantage = {k: found for k, runs in gated.items() if (found := _advantage_rows(runs)) is not None}
    signed = bool(advantage) and all(key == "adv_mean" for _, key in advantage.values())
    plt = _pyplot()
    tasks, colour = _tasks(gated), colours(labels)
    rows = 2 if advantage else 1
    fig, ax_of = _axes(plt, rows, tasks, 2.6)
    for i, task in enumerate(tasks):
        share_ax = ax_of(i, 0)
        for (g_task, protocol, label), runs in gated.items():
            if g_task != task:
                continue
            steps, per_seed = seed_matrix([r.summary["curve"] for r in runs], "train_raw_rate")
            _band(share_ax, steps, 100 * per_seed, colour[label], f"{label} (n={len(runs)})")
            if (g_task, protocol, label) in advantage:
                adv_rows, key = advantage[(g_task, protocol, label)]
                steps, per_seed = seed_matrix(adv_rows, key)  # signed where recorded, else unsigned
                _band(ax_of(i, 1), steps, per_seed, colour[label], f"{label} (n={len(runs)})")
        share_ax.set_title(task)
        share_ax.set_ylabel("raw actions in training (%)")
        share_ax.set_ylim(-3, 103)
        share_ax.legend(loc="lower right")
        if advantage:
            ax_of(i, 1).sharex(share_ax)
            ax_of(i, 1).set_ylabel(("mean advantage, raw - latent" if signed else "mean |advantage|")
                                   + "\n(critic value units)")
            if signed:
                ax_of(i, 1).axhline(0.0, color="0.4", lw=0.8)
        for row in range(rows):
            ax_of(i, row).grid(alpha=0.3)
        ax_of(i, rows - 1).set_xlabel("online environment steps (thousands)")
    fig.suptitle("Advantage gate: raw-policy share of training actions between evaluations"
                 + ((",\nmean advantage of raw over latent" if signed else ",\nmean |advantage|")
                    + " at each evaluation" if advantage else "") + " (mean, 95% t-interval band)")
    fig.tight_layout()
    return fig, bool(advantage)


def performance_profile(groups: Groups, labels: list[str]) -> Figure | None:
    """Fraction of runs (all tasks pooled) with final score above each threshold, per label, with 95 %
    stratified-bootstrap bands. Only labels run on every task of the report, so curves pool the same tasks."""
    tasks = _tasks(groups)
    by_label = {label: [[r.summary["final_normalized"] for r in groups[(t, p, lab)]]
                        for (t, p, lab) in groups
                        if lab == label and has_online_steps(groups[(t, p, lab)])]  # offline: another
                for label in labels}                                                             # protocol's finals
    by_label = {label: finals for label, finals in by_label.items() if len(finals) == len(tasks)}
    if not by_label:
        return None
    finals = [v for per_task in by_label.values() for task in per_task for v in task]
    taus = np.linspace(0.0, max(100.0, math.ceil(max(finals) / 10) * 10), 121)
    lowest = max(0.0, math.floor(min(finals) / 10) * 10 - 10)  # below it every profile is 1
    plt = _pyplot()
    colour = colours(labels)
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 3.4))
    for label, per_task in by_label.items():
        point, lower, upper = bootstrap_ci(per_task, score_profile(taus), reps=PROFILE_REPS)
        runs = sum(len(t) for t in per_task)
        ax.plot(taus, point, color=colour[label], label=f"{label} ({runs} runs)", lw=1.5)
        ax.fill_between(taus, lower, upper, color=colour[label], alpha=0.15, lw=0)
    ax.set_xlabel("D4RL-normalised final score threshold τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(lowest, taus[-1])
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(f"Performance profile over {', '.join(tasks)} (95% stratified-bootstrap bands)")
    fig.tight_layout()
    return fig


def save(fig: Figure, out: Path) -> Path:
    """Write `fig` at README width (800 px) and free it."""
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out
