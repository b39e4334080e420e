"""The Markdown results section of BENCHMARKS.md: per-group table, sample efficiency, and rliable aggregates.

Scores are D4RL-normalised; "final" is the mean of a run's last 5 online evaluations (train/runner.py); per-task
intervals are 95 % Student-t over seeds (`train.summaries.mean_ci95`), cross-task intervals stratified bootstrap
(`report.aggregate`). The first two tables reproduce, digit for digit, what `benchmarks/report_training.py`
generated before this command replaced it.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from spaars_robot.report.aggregate import Statistic, bootstrap_ci, iqm, mean_of_task_means
from spaars_robot.report.run_metrics import (
    area_under_curve,
    eval_interval,
    raw_share_by_part,
    steps_to_reach,
    whole_run_safety,
)
from spaars_robot.report.runs import Run, has_online_steps
from spaars_robot.train.summaries import mean_ci95

# The SPAARS paper's reported D4RL-normalised finals (its results table, medium datasets), for comparison.
PAPER_SCORES = {"hopper": {"spaars": 92.7, "iql": 66.3}, "walker2d": {"spaars": 102.9, "iql": 78.3}}
SAMPLE_EFFICIENCY_BASELINE = "iql"
# the paper measures SPAARS-SUPE against SUPE (steps to SUPE's final score), not against IQL
SKILL_BASELINES = {"spaars-supe": "supe"}


def baseline_label(label: str, algo: str) -> str:
    """The group a run's sample efficiency is measured against: IQL fine-tuning's default run, except for an
    algorithm with its own baseline (SPAARS-SUPE: SUPE run the same way, i.e. the same label suffix)."""
    if algo in SKILL_BASELINES and label.startswith(algo):
        return SKILL_BASELINES[algo] + label[len(algo):]
    return SAMPLE_EFFICIENCY_BASELINE

Groups = dict[tuple[str, str, str], list[Run]]


def group_runs(runs: list[Run]) -> Groups:
    """Runs by (task, protocol, label), seeds in order."""
    groups: Groups = defaultdict(list)
    for run in sorted(runs, key=lambda r: (r.group, r.seed)):
        groups[run.group].append(run)
    return dict(sorted(groups.items()))


def fmt_ci(mean: float, half: float, sign: str = "") -> str:
    """'mean ± half' with one decimal, the mean alone for one seed (nan half-width); sign='+' for differences."""
    point = f"{mean:{sign}.1f}"
    return point if half != half else f"{point} ± {half:.1f}"


def percent_ci(values: list[float]) -> str:
    """Mean and 95 % t-interval of percentages, 'n/a' for none (sac has no CVAE to score support)."""
    return f"{fmt_ci(*mean_ci95(values))}%" if values else "n/a"


def results_table(groups: Groups) -> list[str]:
    """One row per (task, protocol, label): start, final with CI, paper, per seed, safety, gate, switch."""
    lines = ["| task | protocol | algorithm | seeds | offline start | final score (95% CI) | paper | "
             "per seed | out-of-support, first 50k | falls, first 50k | out-of-support, all online | falls, all online "
             "| raw share (thirds of run) | switch step |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (task, protocol, label), runs in groups.items():
        summaries = [r.summary for r in runs]
        final = mean_ci95([s["final_normalized"] for s in summaries])
        start = mean_ci95([s["offline_normalized"] for s in summaries])
        early_oos = [100 * s["early_out_of_support_rate"] for s in summaries
                     if s["early_out_of_support_rate"] is not None]
        early_falls = mean_ci95([s["early_falls"] for s in summaries])
        whole = [whole_run_safety(r) for r in runs]
        whole_oos = [100 * rate for rate, _ in whole if rate is not None]
        whole_falls = mean_ci95([f for _, f in whole])
        thirds = " / ".join("-" if v is None else f"{100 * v:.0f}%" for v in raw_share_by_part(runs))
        switches = [str(s["switch"][0]["step"]) for s in summaries if s.get("switch")]
        paper = PAPER_SCORES.get(task, {}).get(label, "")
        per_seed = " / ".join(f"{s['final_normalized']:.1f}" for s in summaries)
        online = [percent_ci(early_oos), fmt_ci(*early_falls), percent_ci(whole_oos), fmt_ci(*whole_falls)]
        if not has_online_steps(runs):  # an `offline` protocol run never acted online: 0 % would read as safe
            online = ["n/a (offline)"] * 4
        lines.append(f"| {task} | {protocol} | {label} | {', '.join(str(r.seed) for r in runs)} "
                     f"| {fmt_ci(*start)} | {fmt_ci(*final)} | {paper} | {per_seed} | {' | '.join(online)} | {thirds} | "
                     f"{', '.join(switches) or '-'} |")
    return lines


def _steps_text(steps: int | None) -> str:
    return "never" if steps is None else f"{steps // 1000}k"


def sample_efficiency_table(groups: Groups) -> list[str]:
    """Per task and seed: online steps each algorithm needs to reach its baseline's final score of that seed (IQL
    fine-tuning; SUPE for SPAARS-SUPE), beside the steps the baseline itself needed (seeds share the offline
    pretraining, so the target is paired)."""
    lines = []
    for (task, protocol, label), runs in groups.items():
        base = baseline_label(label, str(runs[0].summary.get("algo", "")))
        baseline = {r.seed: r for r in groups.get((task, protocol, base), [])}
        if label == base or not baseline or not has_online_steps(runs):
            continue
        cells = []
        for run in runs:
            if run.seed not in baseline:
                continue
            target = baseline[run.seed].summary["final_normalized"]
            if target <= baseline[run.seed].summary["offline_normalized"]:
                # a final no higher than the offline start is no gain to race to (antmaze: 0 %, "reached" at once)
                cells.append(f"s{run.seed}: n/a (baseline final {target:.1f} is no gain on its offline start)")
                continue
            cells.append(f"s{run.seed}: {_steps_text(steps_to_reach(run, target))} vs "
                         f"{_steps_text(steps_to_reach(baseline[run.seed], target))}")
        if cells:
            lines.append(f"| {task} | {protocol} | {label} | {base} | {'; '.join(cells)} |")
    if not lines:
        return []
    every = eval_interval([r for runs in groups.values() for r in runs])
    schedule = f"evaluations every {every // 1000}k steps" if every else "evaluation schedules differ"
    return ["", "Online steps to first reach the baseline's final score of the same seed (this algorithm vs the "
            f"baseline itself; {schedule}):", "", "| task | protocol | algorithm | baseline | per seed |",
            "|---|---|---|---|---|", *lines]


def _estimate(finals: list[np.ndarray], statistic: Statistic) -> str:
    """Point estimate and bootstrap interval; the point alone when a task has a single run (nothing to resample)."""
    if min(len(f) for f in finals) < 2:
        return f"{float(statistic(finals)):.1f}"
    point, lower, upper = bootstrap_ci(finals, statistic)
    return f"{float(point):.1f} [{float(lower):.1f}, {float(upper):.1f}]"


def aggregate_table(groups: Groups) -> list[str]:
    """Per (protocol, label) across its tasks: IQM and mean of final scores with stratified bootstrap 95 % CIs,
    and the area under the curve (mean score over online training), per task mean with 95 % t-interval."""
    by_label: dict[tuple[str, str], dict[str, list[Run]]] = defaultdict(dict)
    for (task, protocol, label), runs in groups.items():
        by_label[(protocol, label)][task] = runs
    lines = ["", "Across tasks (rliable's estimators, `spaars_robot/report/aggregate.py`): interquartile mean (IQM) "
             "and mean of the final scores, with 95% stratified-bootstrap intervals (runs resampled within each "
             "task, 50,000 replicates; none for a single run); area under the curve = mean normalised score over "
             "online training (offline start to last evaluation), per task, with 95% t-intervals over seeds.", "",
             "| protocol | algorithm | tasks (runs) | IQM final [95% CI] | mean final [95% CI] | "
             "area under the curve, per task |", "|---|---|---|---|---|---|"]
    for (protocol, label), tasks in sorted(by_label.items()):
        finals = [np.array([r.summary["final_normalized"] for r in runs]) for runs in tasks.values()]
        iqm_text, mean_text = (_estimate(finals, statistic) for statistic in (iqm, mean_of_task_means))
        auc = "; ".join(f"{task} {fmt_ci(*mean_ci95([area_under_curve(r) for r in runs]))}"
                        if has_online_steps(runs) else f"{task} n/a (offline)" for task, runs in tasks.items())
        counts = ", ".join(f"{task} ({len(runs)})" for task, runs in tasks.items())
        lines.append(f"| {protocol} | {label} | {counts} | {iqm_text} | {mean_text} | {auc} |")
    return lines


def tag_notes(groups: Groups) -> list[str]:
    """What each `set-<hash>` label stands for: a hand-written note where one was added, else its --set values."""
    notes = sorted({(r.summary["tag"], _tag_note(r.summary)) for runs in groups.values() for r in runs
                    if r.summary.get("tag")})
    return [""] + [f"`{tag}`: {note}." for tag, note in notes] if notes else []


def _tag_note(summary: dict) -> str:
    if summary.get("tag_note"):
        return summary["tag_note"]
    sets = summary.get("tag_sets") or {}
    return "--set " + " ".join(f"{k}={v}" for k, v in sets.items()) if sets else "hyperparameters not recorded"
