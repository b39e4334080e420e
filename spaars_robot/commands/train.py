"""`spaars-robot train` and `spaars-robot plot`: parse options, plan the jobs (train/jobs.py), print results."""
from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, get_args

import typer

from spaars_robot.commands.app import app, console
from spaars_robot.config.training import Algo
from spaars_robot.errors import SpaarsError

# the choices of --algo are config.training.Algo's, listed once there
AlgoChoice = StrEnum("AlgoChoice", {name: name for name in get_args(Algo)})


def _complete_protocol(incomplete: str) -> list[str]:
    from spaars_robot.config.training import protocols_dir

    return [p.stem for p in sorted(protocols_dir().glob("*.yaml")) if p.stem.startswith(incomplete)]


@app.command()
def train(
    task: Annotated[str | None, typer.Option(help="Task name (sim/tasks); required unless --resume.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset path or id (e.g. hopper-medium); not used by sac.")] = None,
    algo: Annotated[AlgoChoice, typer.Option(help="Algorithm; latent and raw are SPAARS's ablations, bc is SPAR's frozen anchor alone, td3bc that anchor improved by TD3+BC's value gradient instead of SPAR's LSI (docs/spar.md), supe is SUPE (OPAL skills + optimistic high-level SAC), spaars-supe SUPE then SPAARS's per-step gate (docs/supe.md).")] = AlgoChoice.spaars,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds; each runs in its own process.")] = "0",
    protocol: Annotated[str, typer.Option(help="smoke | short | paper (sim/protocols), or a protocol YAML path.",
                                          autocompletion=_complete_protocol)] = "short",
    no_concurrent_bc: Annotated[bool, typer.Option("--no-concurrent-bc",
                                                   help="Ablation: no raw BC during the latent phase.")] = False,
    hard_switch: Annotated[bool, typer.Option("--hard-switch",
                                              help="Ablation: switch everything at once, no gate.")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override any config field, e.g. "
                                                   "online.gate.kappa=2 (repeatable).")] = None,
    workers: Annotated[int, typer.Option(help="Parallel seed processes (0 = min(#seeds, CPU cores)).")] = 0,
    precision: Annotated[str, typer.Option(
        help="fp32 | bf16 (the CVAE's pretraining passes under bf16 autocast; critics, targets and advantages stay "
             "fp32) | auto (measure both for a few seconds on this machine, bf16 only if >= 1.1x faster; recorded "
             "in the run).")] = "fp32",
    bf16: Annotated[bool, typer.Option(hidden=True, help="Same as --precision bf16.")] = False,
    safety_spec: Annotated[str | None, typer.Option(
        help="Safety spec (robot name or YAML) whose layer shapes every online training and evaluation action, as "
             "`serve` applies it; 'none' for no layer [default: the task's spec, safety/<task>.yaml, if it exists].")
    ] = None,
    runs_root: Annotated[Path, typer.Option(help="Where run directories are created.")] = Path("runs"),
    run_dir: Annotated[Path | None, typer.Option(help="Explicit run directory (single seed only).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Resume the run in this directory (seed or group dir).")] = None,
    device: Annotated[str | None, typer.Option(
        help="auto | cpu | cuda: where networks, optimiser state and buffers live (auto: cuda when a GPU is usable); "
             "recorded in the run [default: cpu; --resume: the device the run recorded].")] = None,
    wandb: Annotated[str | None, typer.Option(
        metavar="PROJECT", help="Also log the run's scalars to this Weights & Biases project (needs the optional "
                                "wandb extra; WANDB_MODE=offline works without network). Off by default.")] = None,
    results_dir: Annotated[Path | None, typer.Option(
        help="Where compact JSON summaries go (default: RUNS_ROOT/summaries; the committed results are "
             "benchmarks/results/train, written only when asked).")] = None,
) -> None:
    """Offline pretraining (cached) then online fine-tuning in MuJoCo, for any algorithm, several seeds."""
    from dataclasses import replace

    from spaars_robot.data.locate import resolve_dataset
    from spaars_robot.nn.device import resolve_device
    from spaars_robot.train.jobs import parse_seeds, plan_new, plan_resume, run_jobs
    from spaars_robot.train.precision import choose_precision
    from spaars_robot.train.runner import FINAL_EVALUATIONS
    from spaars_robot.train.summaries import write_compact_summary

    cache_dir = Path(os.environ.get("SPAARS_CACHE", runs_root / "_pretrain_cache"))
    chosen_device = resolve_device(device) if device is not None else None  # before any compute
    if wandb is not None:
        from spaars_robot.train.wandb_log import import_wandb

        import_wandb()  # not installed: one line now, not after pretraining
    if resume is not None:
        jobs = plan_resume(resume, cache_dir, chosen_device, wandb)
    else:
        if task is None:
            raise SpaarsError("--task is required (or --resume RUN_DIR)")
        if algo is not AlgoChoice.sac and dataset is None:
            raise SpaarsError(f"--dataset is required for --algo {algo.value}")
        variant_sets = (["online.concurrent_bc=false"] if no_concurrent_bc else []) \
            + (["online.hard_switch=true"] if hard_switch else [])
        dataset_path = resolve_dataset(dataset) if dataset is not None else None
        requested = "bf16" if bf16 else precision

        def plan(use_bf16: bool):
            return plan_new(task, dataset, dataset_path, algo.value, parse_seeds(seeds), protocol, list(set_ or []),
                            variant_sets, runs_root, run_dir, cache_dir, use_bf16, safety_spec,
                            chosen_device or "cpu", wandb)

        jobs = plan(requested == "bf16")
        choice = choose_precision(requested, None, jobs[0].config.pretrain)  # validates the word before any compute
        if requested == "auto" and dataset_path is not None:
            from spaars_robot.data.dataset import OfflineDataset

            console.print("precision auto: measuring fp32 and bf16 pretraining updates on this machine ...")
            choice = choose_precision("auto", OfflineDataset.load(dataset_path), jobs[0].config.pretrain,
                                      jobs[0].config.seed, device=jobs[0].config.device)
            console.print(choice.describe(), highlight=False)
            jobs = plan(choice.bf16)
        jobs = [replace(job, precision=choice.record()) for job in jobs]
    summaries = run_jobs(jobs, workers, " ".join(["spaars-robot", *sys.argv[1:]]))
    for job, summary in zip(jobs, summaries):
        out = write_compact_summary(summary, results_dir or runs_root / "summaries")
        averaged = min(FINAL_EVALUATIONS, max(len(summary["curve"]) - 1, 1))  # curve[0]: the offline start
        console.print(f"{job.run_dir}: final normalised score {summary['final_normalized']:.1f} "
                      f"(mean of the last {averaged} online evaluations; offline start "
                      f"{summary['offline_normalized']:.1f}); summary -> {out}", highlight=False, soft_wrap=True)


@app.command()
def plot(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="Run directories (seed or group dirs) or run summary JSON files.")],
    out: Annotated[Path, typer.Option(help="Output image (PNG or PDF).")] = Path("learning_curves.png"),
) -> None:
    """Learning curves with 95% confidence bands over seeds, and the gate firing rate over time."""
    from spaars_robot.train.plots import plot_runs

    path = plot_runs(run_dirs, out)
    console.print(f"wrote {path}")
