"""`spaars-robot sweep SWEEP.yaml`: run a grid of `train` trials locally or on Ray, resumably, with one view."""
from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from spaars_robot.commands.app import app, console
from spaars_robot.errors import SpaarsError


class Backend(StrEnum):
    local = "local"
    ray = "ray"


@app.command()
def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="Sweep YAML (benchmarks/sweeps/*.yaml; format: docs/sweep.md).")],
    backend: Annotated[Backend, typer.Option(help="local: one process per trial on this machine; ray: one Ray Tune "
                                                  "trial each (1 CPU), on --address or a local Ray.")] = Backend.local,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (ray backend; default: start a local "
                                                     "Ray on this machine, loopback only).")] = None,
    workers: Annotated[int, typer.Option(help="Trials at a time (0 = CPU cores; on Ray, of a local Ray: its CPUs)."
                                         )] = 0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the trials and which are done; run nothing.")
                       ] = False,
) -> None:
    """Every trial (task x algorithm x ablation x variant x seed) as the real `train`; finished ones are skipped,
    interrupted ones resume exactly."""
    from spaars_robot.sweep.spec import load_sweep
    from spaars_robot.sweep.trials import Status, plan_trials

    if workers < 0:
        raise SpaarsError(f"--workers {workers}: expected 0 (CPU cores) or more")
    spec, grids = load_sweep(sweep_file)
    trials = plan_trials(spec, grids, sweep_file)
    statuses = {t.name: t.status() for t in trials}
    counts = {s: sum(v is s for v in statuses.values()) for s in Status}
    console.print(f"{sweep_file}: {len(trials)} trials: {counts[Status.done]} done, {counts[Status.resume]} to "
                  f"resume, {counts[Status.new]} new", highlight=False)
    if dry_run:
        for trial in trials:
            console.print(f"  {statuses[trial.name].value:6} {trial.name}  {trial.run_dir}", highlight=False,
                          soft_wrap=True)
        return
    _check_datasets([t for t in trials if statuses[t.name] is not Status.done])
    workers = workers or os.cpu_count() or 1
    outcome = _run(trials, backend, address, workers)
    console.print(f"sweep: {len(outcome.finished)} trials finished now, {len(outcome.skipped)} were already done, "
                  f"{len(outcome.failed)} failed; summaries in {trials[0].summary_path.parent}", highlight=False,
                  soft_wrap=True)
    if outcome.failed:
        for name, error in outcome.failed.items():
            console.print(f"  failed {name}: {error} (log: its run directory's sweep.log)", highlight=False,
                          soft_wrap=True)
        raise SpaarsError(f"{len(outcome.failed)} trial(s) failed; re-run the same command to retry them")


def _check_datasets(trials: list) -> None:
    """A missing dataset is one line before any trial starts, not one failed trial per seed."""
    from spaars_robot.data.locate import resolve_dataset

    for dataset, task in sorted({(t.dataset, t.task) for t in trials if t.dataset is not None}):
        try:
            resolve_dataset(dataset)
        except SpaarsError as exc:
            raise SpaarsError(f"{exc}; make it first (spaars-robot data collect --task {task} --quality ...) "
                              "or name another in the sweep file's `datasets:`") from exc


def _run(trials: list, backend: Backend, address: str | None, workers: int):
    from spaars_robot.sweep.view import SweepView

    with SweepView(trials, console) as view:
        if backend is Backend.local:
            from spaars_robot.sweep.local import run_local

            return run_local(trials, workers, view)
        from spaars_robot.sweep.ray_backend import run_ray

        return run_ray(trials, address, workers, view)
