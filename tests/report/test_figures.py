"""The report's figures draw what they say: one line and one band per label and task, README-sized PNGs."""
from __future__ import annotations

from matplotlib.collections import PolyCollection

from spaars_robot.report import figures
from spaars_robot.report.build import default_labels
from spaars_robot.report.runs import find_runs
from spaars_robot.report.tables import group_runs
from tests.conftest import REPO

COMMITTED = REPO / "benchmarks" / "results" / "train"
# the committed main grid plus two ablations (2 seeds, one of them hopper only); fixed files, so a summary
# committed later cannot change what these figures must contain
FILES = [p for label in ("iql", "latent", "raw", "spaars", "spaars-hard-switch", "spaars-no-concurrent-bc")
         for p in sorted(COMMITTED.glob(f"*_{label}_short_seed*.json"))]
GROUPS = group_runs(find_runs(FILES))


def _bands(ax) -> int:
    return sum(isinstance(c, PolyCollection) for c in ax.collections)


def test_default_labels_are_the_ones_with_3_seeds_on_every_task():
    assert default_labels(GROUPS) == ["iql", "latent", "raw", "spaars"]


def test_learning_curves_one_line_and_band_per_label_and_task(tmp_path):
    fig = figures.learning_curves(GROUPS, default_labels(GROUPS))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["hopper (short protocol)", "walker2d (short protocol)"]
    for ax in axes:
        assert len(ax.lines) == 4 and _bands(ax) == 4
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [
            "iql (n=5)", "latent (n=5)", "raw (n=5)", "spaars (n=5)"]
        assert ax.get_xlabel() == "online environment steps (thousands)"
        assert ax.get_ylabel() == "D4RL-normalised score"
        assert len(ax.lines[0].get_xdata()) == 21  # step 0 (offline start) + 20 online evaluations
    out = figures.save(fig, tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(out).size[0] == 800  # README width


def test_gate_figure_shows_the_gated_labels_only_and_says_the_advantage_is_not_in_summaries():
    fig, with_advantage = figures.gate_figure(GROUPS, default_labels(GROUPS))
    assert not with_advantage  # compact summaries do not carry adv_scale
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2 and all(len(ax.lines) == 1 for ax in axes)  # spaars only: iql/raw 100%, latent 0%
    assert axes[0].get_ylabel() == "raw actions in training (%)"
    assert figures.gate_figure(GROUPS, ["iql", "latent"]) == (None, False)


def test_performance_profile_pools_labels_run_on_every_task():
    fig = figures.performance_profile(GROUPS, ["spaars", "iql", "spaars-hard-switch"])  # hard-switch: hopper only
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["spaars (10 runs)", "iql (10 runs)"]
    assert len(ax.lines) == 2 and _bands(ax) == 2
    assert figures.performance_profile(GROUPS, ["spaars-hard-switch"]) is None


def test_an_offline_group_draws_no_curve_and_leaves_the_title_alone():
    """An `offline` run has one point (its offline score) and no curve: it must not add a line, a band or its
    protocol to a task's title."""
    from pathlib import Path

    from spaars_robot.report.runs import Run

    iql = GROUPS[("hopper", "short", "iql")][0].summary
    offline = [Run({**iql, "protocol": "offline", "seed": s, "curve": iql["curve"][:1]}, Path(f"o{s}.json"))
               for s in range(3)]
    groups = group_runs([r for runs in GROUPS.values() for r in runs] + offline)
    fig = figures.learning_curves(groups, default_labels(GROUPS))
    hopper = [ax for ax in fig.axes if ax.get_visible()][0]
    assert hopper.get_title() == "hopper (short protocol)"
    assert len(hopper.lines) == 4 and _bands(hopper) == 4
    (ax,) = figures.performance_profile(groups, ["spaars", "iql"]).axes  # iql's offline runs were a third "task"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["spaars (10 runs)", "iql (10 runs)"]
