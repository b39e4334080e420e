"""`spaars-robot train` and `spaars-robot plot`."""
from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Optional

import typer

from spaars_robot.app import app, console
from spaars_robot.errors import SpaarsError


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise SpaarsError(f"--seeds {text!r}: expected comma-separated integers like 0,1,2") from exc
    if not seeds or len(set(seeds)) != len(seeds):
        raise SpaarsError(f"--seeds {text!r}: expected distinct integers")
    return seeds


def _train_one(kwargs: dict) -> dict:
    """Process entry point for one seed (spawned: each seed is its own process with its own threads)."""
    from spaars_robot.train.runner import Runner

    log = Path(kwargs["run_dir"]) / "train.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    runner = Runner(kwargs["config"], kwargs["run_dir"], kwargs["cache_dir"], kwargs["dataset_path"],
                    kwargs["bf16"], show_progress=kwargs["show_progress"], command=kwargs["command"])
    return runner.run(resume=kwargs["resume"])


def _load_run_config(path: Path):
    """A run directory's resolved config.yaml -> (TrainConfig, dataset path, bf16); a damaged one is a clear error."""
    import yaml
    from pydantic import ValidationError

    from spaars_robot.config.loading import format_validation_error
    from spaars_robot.errors import ConfigError
    from spaars_robot.train.config import TrainConfig

    try:
        raw = yaml.safe_load(path.read_text())
        if not isinstance(raw, dict) or "dataset_path" not in raw or "bf16" not in raw:
            raise ConfigError(f"{path}: not a run config written by `spaars-robot train` (no dataset_path/bf16)")
        ds_path, use_bf16 = raw.pop("dataset_path"), raw.pop("bf16")
        raw.pop("command", None)
        return TrainConfig.model_validate(raw), ds_path, use_bf16
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); the run cannot be resumed "
                          "from it") from exc
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from exc


@app.command()
def train(
    task: Optional[str] = typer.Option(None, help="Task name (sim/tasks) — required unless --resume."),
    dataset: Optional[str] = typer.Option(None, help="Dataset path or id (e.g. hopper-medium); not used by sac."),
    algo: str = typer.Option("spaars", help="spaars | iql | latent | raw | sac"),
    seeds: str = typer.Option("0", help="Comma-separated seeds; each runs in its own process."),
    protocol: str = typer.Option("short", help="smoke | short | paper, or a protocol YAML path."),
    no_concurrent_bc: bool = typer.Option(False, "--no-concurrent-bc", help="Ablation: no raw BC during latent phase."),
    hard_switch: bool = typer.Option(False, "--hard-switch", help="Ablation: switch everything at once, no gate."),
    set_: list[str] = typer.Option([], "--set", help="Override any config field: --set online.gate.kappa=2"),
    workers: int = typer.Option(0, help="Parallel seed processes (0 = min(#seeds, CPU cores))."),
    bf16: bool = typer.Option(False, help="bf16 autocast for offline network passes (fp32 master weights)."),
    runs_root: Path = typer.Option(Path("runs"), help="Where run directories are created."),
    run_dir: Optional[Path] = typer.Option(None, help="Explicit run directory (single seed only)."),
    resume: Optional[Path] = typer.Option(None, help="Resume the run in this directory (seed dir or group dir)."),
    results_dir: Path = typer.Option(Path("benchmarks/results/train"), help="Where compact JSON summaries go."),
) -> None:
    """Offline pretraining (cached) then online fine-tuning in MuJoCo, for any algorithm, several seeds."""
    from spaars_robot.commands.data import resolve_dataset
    from spaars_robot.train.config import hyperparameter_changes, hyperparameter_tag, resolve_config
    from spaars_robot.train.summaries import run_name, write_compact_summary

    jobs: list[dict] = []
    cache_dir = Path(os.environ.get("SPAARS_CACHE", runs_root / "_pretrain_cache"))
    if resume is not None:
        dirs = [resume] if (resume / "config.yaml").exists() else sorted(p.parent for p in resume.glob("*/config.yaml"))
        if not dirs:
            raise SpaarsError(f"{resume}: no run (config.yaml) found to resume")
        for d in dirs:
            cfg, ds_path, use_bf16 = _load_run_config(d / "config.yaml")
            jobs.append({"config": cfg, "run_dir": d, "cache_dir": cache_dir, "resume": (d / "checkpoint.pt").exists(),
                         "dataset_path": None if ds_path == "None" else Path(ds_path), "bf16": use_bf16})
    else:
        if task is None:
            raise SpaarsError("--task is required (or --resume RUN_DIR)")
        if algo != "sac" and dataset is None:
            raise SpaarsError(f"--dataset is required for --algo {algo}")
        dataset_path = resolve_dataset(dataset) if dataset is not None else None
        seed_list = _parse_seeds(seeds)
        variant_sets = (["online.concurrent_bc=false"] if no_concurrent_bc else []) \
            + (["online.hard_switch=true"] if hard_switch else [])
        sets = list(set_) + variant_sets
        if run_dir is not None and len(seed_list) > 1:
            raise SpaarsError("--run-dir takes a single seed; use --runs-root for several")
        for seed in seed_list:
            fields = {"task": task, "dataset": str(dataset or ""), "algo": algo, "seed": seed}
            cfg = resolve_config(protocol, fields, sets)
            if set_:
                default = resolve_config(protocol, fields, variant_sets)
                tag = hyperparameter_tag(cfg, default)
                cfg = cfg.model_copy(update={"tag": tag, "tag_sets": hyperparameter_changes(cfg, default)})
            group = runs_root / run_name(task, algo, cfg.protocol, cfg.online.concurrent_bc, cfg.online.hard_switch,
                                         cfg.tag, bf16)
            jobs.append({"config": cfg, "run_dir": run_dir or group / f"seed{seed}", "cache_dir": cache_dir,
                         "resume": False, "dataset_path": dataset_path, "bf16": bf16})
    parallel = workers or min(len(jobs), os.cpu_count() or 1)
    command = " ".join(["spaars-robot", *sys.argv[1:]])
    for job in jobs:
        job["command"] = command
        job["show_progress"] = len(jobs) == 1 or parallel == 1
        if len(jobs) > 1 and parallel > 1:
            job["config"] = job["config"].model_copy(update={"threads": 1})
    if parallel == 1:
        summaries = [_train_one(job) for job in jobs]
    else:
        with ProcessPoolExecutor(parallel, mp_context=get_context("spawn")) as pool:
            summaries = list(pool.map(_train_one, jobs))
    for job, summary in zip(jobs, summaries):
        out = write_compact_summary(summary, results_dir)
        console.print(f"{job['run_dir']}: final normalised score {summary['final_normalized']:.1f} "
                      f"(offline start {summary['offline_normalized']:.1f}); summary -> {out}")


@app.command()
def plot(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories (seed or group dirs) or run summary JSON files."),
    out: Path = typer.Option(Path("learning_curves.png"), help="Output image (PNG or PDF)."),
) -> None:
    """Learning curves with 95% confidence bands over seeds, and the gate firing rate over time."""
    from spaars_robot.train.plots import plot_runs

    path = plot_runs(run_dirs, out)
    console.print(f"wrote {path}")
