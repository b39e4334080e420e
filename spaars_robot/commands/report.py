"""`spaars-robot report`: parse options, build the report (report/build.py), print what was written."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from spaars_robot.commands.app import app, console


@app.command()
def report(
    paths: Annotated[list[Path], typer.Argument(
        help="Run summary JSON files, directories of them (benchmarks/results/train), run directories, or a "
             "sweep's runs root.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Directory for report.md, the figures and the rollout GIFs.")]
    = Path("report"),
    update: Annotated[Path | None, typer.Option(
        help="Also rewrite the generated section of this Markdown file (e.g. BENCHMARKS.md).")] = None,
    labels: Annotated[str | None, typer.Option(
        help="Comma-separated labels to draw (e.g. spaars,iql); default: those with >= 3 seeds on every task.")]
    = None,
    bundle: Annotated[list[Path] | None, typer.Option(
        help="An exported bundle to render a rollout GIF of (repeatable); run directories with a "
             "checkpoint.pt are rendered too.")] = None,
    render: Annotated[bool, typer.Option(help="Render rollout GIFs (MuJoCo offscreen, MUJOCO_GL=egl).")] = True,
    gif_steps: Annotated[int, typer.Option(min=1, help="Control steps per rollout GIF.")] = 375,
) -> None:
    """Results tables (per-task mean and 95% CI, IQM with bootstrap CIs, safety, sample efficiency) and figures."""
    from spaars_robot.report.build import build_report

    chosen = [label.strip() for label in labels.split(",") if label.strip()] if labels else None
    built = build_report(paths, out, " ".join(["spaars-robot", *sys.argv[1:]]), chosen, bundle, render, gif_steps,
                         update)
    console.print(f"{built.runs} run{'' if built.runs == 1 else 's'} -> {built.markdown}", highlight=False,
                  soft_wrap=True)
    for caption, path in built.figures:
        console.print(f"  {path}: {caption}", highlight=False, soft_wrap=True)
    for why in built.not_drawn:
        console.print(f"  not drawn: {why}", highlight=False, soft_wrap=True)
    if update is not None:
        console.print(f"updated {update}", highlight=False)
