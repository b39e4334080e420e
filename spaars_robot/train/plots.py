"""Learning curves like the SPAARS paper's figure 4: mean normalised score with 95% CI bands over seeds,
plus the gate firing rate (share of raw actions) over training.

Inputs are run directories or committed run summaries (benchmarks/results/train/*.json), so a figure can be
redrawn from what is in git long after the run directories are gone."""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from spaars_robot.errors import SpaarsError
from spaars_robot.train.summaries import mean_ci95, summary_run_name


def _seed_dirs(path: Path) -> list[Path]:
    if (path / "metrics.csv").exists():
        return [path]
    found = sorted(p.parent for p in path.glob("*/metrics.csv"))
    if not found:
        raise SpaarsError(f"{path}: no metrics.csv (not a run directory)")
    return found


def _read(path: Path) -> list[dict]:
    with open(path / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def _summary_curve(path: Path) -> tuple[str, list[dict]]:
    """(group label named like the run directory, evaluation rows) of a committed run summary."""
    try:
        summary = json.loads(path.read_text())
        label = summary_run_name(summary)
        rows = [{k: str(c[k]) for k in ("step", "normalized_mean", "train_raw_rate")} for c in summary["curve"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SpaarsError(f"{path}: not a run summary ({exc.__class__.__name__}: {exc})") from exc
    return label, rows


def collect_curves(run_dirs: list[Path]) -> dict[str, list[list[dict]]]:
    """Evaluation rows per group (one list per seed); a group is a run directory name such as hopper-spaars-short."""
    groups: dict[str, list[list[dict]]] = defaultdict(list)
    for run_dir in run_dirs:
        if Path(run_dir).suffix == ".json":
            label, rows = _summary_curve(Path(run_dir))
            groups[label].append(rows)
            continue
        for seed_dir in _seed_dirs(Path(run_dir)):
            label = seed_dir.parent.name if seed_dir.name.startswith("seed") else seed_dir.name
            groups[label].append(_read(seed_dir))
    return dict(groups)


def seed_matrix(runs: list[list[dict]], key: str) -> tuple[list[int], np.ndarray]:
    """(steps every seed evaluated at, seeds x steps values of `key`).

    The gate's raw share at step 0 is left out: no training action has been taken before the first
    evaluation, and the 0 the runner writes there would draw a ramp that no policy made."""
    steps = sorted(set.intersection(*[{int(r["step"]) for r in rows} for rows in runs]))
    if key == "train_raw_rate":
        steps = [s for s in steps if s > 0]
    values = np.array([[float(next(r[key] for r in rows if int(r["step"]) == s)) for s in steps] for rows in runs])
    return steps, values


def plot_runs(run_dirs: list[Path], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = collect_curves(run_dirs)
    fig, (ax_score, ax_gate) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, height_ratios=[2, 1])
    seen: dict[str, list[float]] = {"normalized_mean": [], "train_raw_rate": []}
    for label, runs in groups.items():
        for key, ax in (("normalized_mean", ax_score), ("train_raw_rate", ax_gate)):
            steps, per_seed = seed_matrix(runs, key)
            stats = [mean_ci95(list(per_seed[:, i])) for i in range(len(steps))]
            mean = np.array([m for m, _ in stats])
            half = np.nan_to_num(np.array([h for _, h in stats]))
            (line,) = ax.plot(steps, mean, label=f"{label} (n={len(runs)})")
            ax.fill_between(steps, mean - half, mean + half, alpha=0.15, color=line.get_color())
            if len(runs) < 5:  # few seeds: the t-band is very wide, so show the seeds themselves too
                for seed_curve in per_seed:
                    ax.plot(steps, seed_curve, color=line.get_color(), alpha=0.35, lw=0.7)
            seen[key] += list(per_seed.ravel())
    # axes span the observed per-seed values (a 2-seed t-band reaches far past any score a seed had)
    for key, ax in (("normalized_mean", ax_score), ("train_raw_rate", ax_gate)):
        if seen[key]:
            lo, hi = min(seen[key]), max(seen[key])
            pad = 0.05 * (hi - lo or 1.0)
            ax.set_ylim(lo - pad, hi + pad)
    ax_score.set_ylabel("D4RL-normalised score")
    ax_score.legend(fontsize=8)
    ax_score.grid(alpha=0.3)
    ax_gate.set_ylabel("gate firing rate\n(raw share, training)")
    ax_gate.set_xlabel("online environment steps")
    ax_gate.grid(alpha=0.3)
    fig.suptitle("Mean and 95% t-interval over seeds (thin lines: single seeds when fewer than 5)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
