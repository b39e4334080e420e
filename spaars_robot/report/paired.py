"""Paired per-seed differences: what issues 16 and 19 ask ("report the paired per-seed differences").

Two runs of the same task, protocol, dataset and seed share the offline pretraining (the cache key is the seed
and the dataset), so their difference removes the seed's share of the variance; a difference of group means
with separate intervals would hide a consistent lead inside two wide bands. Each algorithm is compared with
the baselines the method makes claims against (SPAARS: raw and latent-only fine-tuning and IQL; SPAR: the
value-gradient actor on the same critic, its own anchor and IQL; SPAARS-SUPE: SUPE), and every variant of an
algorithm (an ablation, a `--set` tag) with that algorithm's default run, so a configuration is read against
the one it departs from. A tagged run is also read against each baseline run under the same tag: the tag is a
hash of every hyperparameter, so an equal tag means equal settings (kitchen's SPAARS-SUPE and SUPE both start the
high level's temperature at 1.0, `set-88f7a43f`), and only that pair compares like with like.
"""
from __future__ import annotations

from spaars_robot.report.run_metrics import whole_run_safety
from spaars_robot.report.runs import Run, has_online_steps
from spaars_robot.report.tables import Groups, fmt_ci
from spaars_robot.train.summaries import dataset_label, mean_ci95, variant_label

# Algorithm -> the baselines its claims are made against (each compared only where it was run).
BASELINES: dict[str, tuple[str, ...]] = {
    "spaars": ("raw", "latent", "iql"),
    "spar": ("td3bc", "bc", "iql"),
    "td3bc": ("bc", "iql"),
    "spaars-supe": ("supe",),
}


def default_label(summary: dict, algo: str, tag: str = "") -> str:
    """The label of `algo`'s default run beside this one: same dataset and safety spec (they change the task),
    no ablation, fp32 (the baselines of record), untagged unless `tag` names the settings to match."""
    return variant_label(algo, True, False, False, tag, summary.get("safety_spec") is not None,
                         dataset_label(summary["task"], summary.get("dataset")))


def comparisons(groups: Groups) -> list[tuple[tuple[str, str, str], tuple[str, str, str]]]:
    """(group, baseline group) pairs present in `groups` with at least one seed in common."""
    pairs = []
    for key, runs in groups.items():
        task, protocol, label = key
        summary = runs[0].summary
        algo = str(summary["algo"])
        own_default = default_label(summary, algo)
        bases = BASELINES.get(algo, ())
        tag = summary.get("tag") or ""
        wanted = ([own_default] if label != own_default else []) + \
            ([default_label(summary, base, tag) for base in bases] if tag else []) + \
            [default_label(summary, base) for base in bases]
        for base_label in wanted:
            base = (task, protocol, base_label)
            if base in groups and {r.seed for r in runs} & {r.seed for r in groups[base]}:
                pairs.append((key, base))
    return pairs


def paired_row(runs: list[Run], baseline: list[Run]) -> dict:
    """Per common seed: final minus the baseline's final, whole-run out-of-support rates and falls of each."""
    by_seed = {r.seed: r for r in baseline}
    common = [r for r in runs if r.seed in by_seed]
    diffs = [r.summary["final_normalized"] - by_seed[r.seed].summary["final_normalized"] for r in common]
    row = {"seeds": [r.seed for r in common], "differences": diffs, "ahead": sum(d > 0 for d in diffs)}
    if has_online_steps(common) and has_online_steps([by_seed[r.seed] for r in common]):
        mine = [whole_run_safety(r) for r in common]
        theirs = [whole_run_safety(by_seed[r.seed]) for r in common]
        row["falls"] = [m[1] - t[1] for m, t in zip(mine, theirs, strict=True)]
        rates = [(m[0], t[0]) for m, t in zip(mine, theirs, strict=True) if m[0] is not None and t[0] is not None]
        if rates and sum(t for _, t in rates) > 0:
            row["oos_ratio"] = sum(m for m, _ in rates) / sum(t for _, t in rates)
    return row


def paired_table(groups: Groups) -> list[str]:
    """One row per (group, baseline): per-seed final differences, their mean with a 95 % t-interval, how many
    seeds are ahead, and the whole-run safety against the baseline's (issue 16: out-of-support over all online
    steps <= 1/2 of raw fine-tuning's, with fewer falls)."""
    lines = []
    for key, base in comparisons(groups):
        task, protocol, label = key
        row = paired_row(groups[key], groups[base])
        per_seed = " / ".join(f"s{s} {d:+.1f}" for s, d in zip(row["seeds"], row["differences"], strict=True))
        ratio = f"{row['oos_ratio']:.2f}x" if "oos_ratio" in row else "n/a"
        falls = fmt_ci(*mean_ci95(row["falls"]), sign="+") if "falls" in row else "n/a"
        lines.append(f"| {task} | {protocol} | {label} | {base[2]} | {per_seed} | "
                     f"{fmt_ci(*mean_ci95(row['differences']), sign='+')} | {row['ahead']} of {len(row['seeds'])} | "
                     f"{ratio} | {falls} |")
    if not lines:
        return []
    return ["", "Paired per seed (same task, protocol, dataset and seed, so the same offline pretraining): final "
            "score minus the baseline's, mean with 95% t-interval; seeds ahead; whole-run out-of-support rate as a "
            "ratio to the baseline's (pooled over the common seeds); falls over all online steps minus the "
            "baseline's.", "",
            "| task | protocol | algorithm | minus | per seed | mean difference (95% CI) | seeds ahead | "
            "out-of-support, all online, ratio | falls, all online, difference |",
            "|---|---|---|---|---|---|---|---|---|", *lines]
