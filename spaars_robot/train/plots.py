"""Learning curves like the SPAARS paper's figure 4: mean normalised score with 95% CI bands over seeds,
plus the gate firing rate (share of raw actions) over training."""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from spaars_robot.errors import SpaarsError
from spaars_robot.train.summaries import mean_ci95


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


def plot_runs(run_dirs: list[Path], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[list[dict]]] = defaultdict(list)
    for run_dir in run_dirs:
        for seed_dir in _seed_dirs(Path(run_dir)):
            label = seed_dir.parent.name if seed_dir.name.startswith("seed") else seed_dir.name
            groups[label].append(_read(seed_dir))
    fig, (ax_score, ax_gate) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, height_ratios=[2, 1])
    for label, runs in groups.items():
        steps = sorted(set.intersection(*[{int(r["step"]) for r in rows} for rows in runs]))
        for key, ax in (("normalized_mean", ax_score), ("train_raw_rate", ax_gate)):
            stats = [mean_ci95([float(next(r[key] for r in rows if int(r["step"]) == s)) for rows in runs])
                     for s in steps]
            mean = np.array([m for m, _ in stats])
            half = np.nan_to_num(np.array([h for _, h in stats]))
            ax.plot(steps, mean, label=f"{label} (n={len(runs)})")
            ax.fill_between(steps, mean - half, mean + half, alpha=0.2)
    ax_score.set_ylabel("D4RL-normalised score")
    ax_score.legend(fontsize=8)
    ax_score.grid(alpha=0.3)
    ax_gate.set_ylabel("gate firing rate\n(raw share, training)")
    ax_gate.set_xlabel("online environment steps")
    ax_gate.grid(alpha=0.3)
    fig.suptitle("Mean and 95% CI over seeds")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
