"""Where in the maze the gate handed control to raw actions over training (the SPAARS paper's figure 3).

One figure per maze task: a row per drawn label whose runs recorded a gate map (train/gate_map.py), a column per
quarter of the online budget; each panel is the maze (walls dark) with every visited bin coloured by the share of
training steps taken there that executed the raw policy, summed over seeds. Bins visited fewer than
`MIN_STEPS` times are left blank: a share of 1 of 2 steps is noise, not a decision.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from spaars_robot.report.figures import WIDTH_IN, _pyplot
from spaars_robot.report.tables import Groups

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MIN_STEPS = 5


def _steps(n: int) -> str:
    return f"{n / 1000:g}k" if n >= 1000 else str(n)


def summed_maps(groups: Groups, labels: list[str]) -> dict[str, dict[str, dict]]:
    """{task: {label: gate map with steps and raw summed over the label's seeds, plus `seeds`}}.

    Runs without a map (locomotion, offline, runs from before maps were recorded) are left out; seeds whose map
    differs in shape from the first (another maze file) are an error rather than a silently wrong sum.
    """
    out: dict[str, dict[str, dict]] = {}
    for (task, _protocol, label), runs in groups.items():
        maps = [run.summary["gate_map"] for run in runs if run.summary.get("gate_map")]
        if label not in labels or not maps:
            continue
        first = maps[0]
        steps, raw = np.zeros_like(np.asarray(first["steps"])), np.zeros_like(np.asarray(first["raw"]))
        for m in maps:
            if m["walls"] != first["walls"] or np.shape(m["steps"]) != steps.shape:
                raise ValueError(f"{task} {label}: the seeds' gate maps are of different mazes or bin grids")
            steps, raw = steps + np.asarray(m["steps"]), raw + np.asarray(m["raw"])
        out.setdefault(task, {})[label] = {**first, "steps": steps, "raw": raw, "seeds": len(maps)}
    return out


def maze_gate_figure(task: str, maps: dict[str, dict]) -> Figure:
    plt = _pyplot()
    labels = list(maps)
    periods = np.asarray(next(iter(maps.values()))["steps"]).shape[0]
    fig, axes = plt.subplots(len(labels), periods, figsize=(WIDTH_IN, 2.3 * len(labels) + 0.9), squeeze=False)
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    image = None
    for r, label in enumerate(labels):
        m = maps[label]
        walls = np.asarray(m["walls"], dtype=bool)
        half_w, half_h = walls.shape[1] * m["cell_size_m"] / 2, walls.shape[0] * m["cell_size_m"] / 2
        extent = (-half_w, half_w, -half_h, half_h)
        steps, raw = np.asarray(m["steps"], dtype=float), np.asarray(m["raw"], dtype=float)
        budget = m["env_steps"]
        for p in range(periods):
            ax = axes[r, p]
            share = np.where(steps[p] >= MIN_STEPS, 100 * raw[p] / np.maximum(steps[p], 1), np.nan)
            image = ax.imshow(np.ma.masked_invalid(share), extent=extent, origin="upper", cmap=cmap, vmin=0,
                              vmax=100, interpolation="nearest")
            ax.imshow(np.where(walls, 1.0, np.nan), extent=extent, origin="upper", cmap="Greys", vmin=0, vmax=1.4,
                      interpolation="nearest")
            lo, hi = p * budget // periods, (p + 1) * budget // periods
            visited = int(steps[p].sum())
            overall = 100 * raw[p].sum() / max(visited, 1)
            ax.set_title(f"steps {_steps(lo)}-{_steps(hi)}: raw {overall:.0f}%", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if p == 0:
                ax.set_ylabel(f"{label}\n(n={m['seeds']})", fontsize=8)
    fig.suptitle(f"{task}: share of training steps executing the raw policy, by place (walls grey; blank: "
                 f"< {MIN_STEPS} steps)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    bar = fig.add_axes((0.91, 0.15, 0.015, 0.7))
    fig.colorbar(image, cax=bar).set_label("raw actions (%)")
    return fig
