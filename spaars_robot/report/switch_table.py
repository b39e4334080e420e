"""The hand-over, per seed: when it fired and on what, the dip it caused, and what the gated phase did.

Issue 16 asks whether the transition fires on evidence before its cap (in 4 of 5 seeds) and whether safety
is kept after the switch, not only before it; issue 19 compares SPAARS's raw policies by their dip at the
switch and their out-of-support rate after it. These are per-seed facts that a group mean hides (one seed's
dip of 60 points averages away), so the table lists seeds. Evaluation rows after the switch step are the
gated phase's: each covers the `eval.every` training steps before it (report/run_metrics.py).
"""
from __future__ import annotations

from collections.abc import Callable

from spaars_robot.algos.transition import CAP_REASON
from spaars_robot.report.run_metrics import out_of_support_rate
from spaars_robot.report.runs import Run
from spaars_robot.report.tables import Groups, fmt_ci, percent_ci
from spaars_robot.train.summaries import mean_ci95


def switch_facts(run: Run) -> dict | None:
    """The first switch of a run and the evaluations around it; None for a run that never switched."""
    switches = run.summary.get("switch") or []
    if not switches:
        return None
    first = switches[0]
    step = int(first["step"])
    curve = run.summary["curve"]
    before = [r for r in curve if r["step"] <= step]
    after = [r for r in curve if r["step"] > step]
    reason = str(first.get("reason") or first.get("transition_check") or "")
    # a record without a reason is not counted as a decision on evidence: only a logged one is
    facts = {"step": step, "on_evidence": bool(reason) and not reason.startswith(CAP_REASON), "reason": reason,
             "last_latent": before[-1]["normalized_mean"] if before else None,
             "first_gated": after[0]["normalized_mean"] if after else None}
    if after:
        facts["raw_share_after"] = sum(r["eval_raw_rate"] for r in after) / len(after)
        oos = out_of_support_rate(after)
        if oos is not None:
            facts["oos_after"] = oos
    return facts


def _seeds(runs: list[Run], facts: list[dict], text: Callable[[dict], str]) -> str:
    return " / ".join(f"s{r.seed} {text(f)}" for r, f in zip(runs, facts, strict=True))


def _cause(facts: dict) -> str:
    if not facts["reason"]:
        return " (no reason logged)"
    return "" if facts["on_evidence"] else " (cap)"


def switch_table(groups: Groups) -> list[str]:
    """One row per group that switched: per-seed switch step (cap or evidence), the last latent-phase evaluation
    against the first gated one, and the gated phase's raw share and out-of-support rate."""
    lines = []
    for (task, protocol, label), runs in groups.items():
        pairs = [(r, f) for r in runs if (f := switch_facts(r)) is not None]
        if not pairs:
            continue
        switched = [r for r, _ in pairs]
        facts = [f for _, f in pairs]
        when = _seeds(switched, facts, lambda f: f"{f['step'] // 1000}k{_cause(f)}")
        dip = _seeds(switched, facts, lambda f: "n/a" if f["first_gated"] is None
                     else f"{f['last_latent']:.1f} -> {f['first_gated']:.1f}")
        dips = [f["first_gated"] - f["last_latent"] for f in facts if f["first_gated"] is not None]
        raw = percent_ci([100 * f["raw_share_after"] for f in facts if "raw_share_after" in f])
        oos = percent_ci([100 * f["oos_after"] for f in facts if "oos_after" in f])
        change = fmt_ci(*mean_ci95(dips), sign="+") if dips else "n/a"
        evidence = sum(f["on_evidence"] for f in facts)
        lines.append(f"| {task} | {protocol} | {label} | {when} | {evidence} of {len(runs)} | {dip} | "
                     f"{change} | {raw} | {oos} |")
    if not lines:
        return []
    return ["", "The switch per seed: its step ('(cap)': t_max decided, not the evidence); the last evaluation of "
            "the latent phase and the first of the gated one, and their mean change (95% t-interval); over the "
            "gated phase's evaluations, the raw share of evaluation steps and the out-of-support rate of training "
            "steps.", "",
            "| task | protocol | algorithm | switch step per seed | fired before the cap | last latent -> first "
            "gated | change at the switch | raw share after the switch | out-of-support after the switch |",
            "|---|---|---|---|---|---|---|---|---|", *lines]
