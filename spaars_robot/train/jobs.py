"""What `spaars-robot train` runs: typed jobs (one per seed), planned once, run as one process each.

Planning resolves every config exactly once (with the hyperparameter tag that names a `--set` run), so the
run directory, the summary name and the trained config cannot disagree. Each seed is its own spawned
process with one torch thread when several run at once (BENCHMARKS "Several seeds": fastest on 2 cores).
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

from spaars_robot.config.ranges import ranges_problem
from spaars_robot.config.training import (
    TrainConfig,
    hyperparameter_changes,
    hyperparameter_tag,
    load_run_config,
    resolve_config,
)
from spaars_robot.errors import ConfigError, SpaarsError
from spaars_robot.train.summaries import config_run_name

if TYPE_CHECKING:
    from spaars_robot.config.tasks import TaskSpec


@dataclass(frozen=True)
class TrainJob:
    config: TrainConfig
    run_dir: Path
    cache_dir: Path
    dataset_path: Path | None
    bf16: bool
    resume: bool = False
    command: str = ""
    show_progress: bool = True
    precision: dict | None = None  # `--precision` as asked and chosen (train/precision.py), recorded in the run


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise SpaarsError(f"--seeds {text!r}: expected comma-separated integers like 0,1,2") from exc
    if not seeds or len(set(seeds)) != len(seeds):
        raise SpaarsError(f"--seeds {text!r}: expected distinct integers")
    return seeds


def plan_new(task: str, dataset: str | None, dataset_path: Path | None, algo: str, seeds: list[int], protocol: str,
             sets: list[str], variant_sets: list[str], runs_root: Path, run_dir: Path | None, cache_dir: Path,
             bf16: bool, safety_spec: str | None = None, device: str = "cpu",
             wandb: str | None = None) -> list[TrainJob]:
    """One job per seed; `variant_sets` are the ablation flags, which name the run but are not a `--set` tag.

    `safety_spec`: `--safety-spec` as given (None: the task's own spec when it has one; "none": no layer).
    `device` (resolved: cpu | cuda) and `wandb` (a W&B project or None) are recorded in each config; neither names
    the run.
    """
    from spaars_robot.config.tasks import load_task
    from spaars_robot.train.safety_in_loop import resolve_training_spec

    if run_dir is not None and len(seeds) > 1:
        raise SpaarsError("--run-dir takes a single seed; use --runs-root for several")
    task_spec = load_task(task)
    spec, spec_sha = resolve_training_spec(task_spec, safety_spec)
    jobs = []
    for seed in seeds:
        fields = {"task": task, "dataset": str(dataset or ""), "algo": algo, "seed": seed, "safety_spec": spec,
                  "safety_spec_sha256": spec_sha, "device": device, "wandb": wandb}
        cfg = with_task_defaults(resolve_config(protocol, fields, sets + variant_sets), task_spec)
        if sets:
            default = with_task_defaults(resolve_config(protocol, fields, variant_sets), task_spec)
            cfg = cfg.model_copy(update={"tag": hyperparameter_tag(cfg, default),
                                         "tag_sets": hyperparameter_changes(cfg, default)})
        group = runs_root / config_run_name(cfg, bf16)
        jobs.append(TrainJob(cfg, run_dir or group / f"seed{seed}", cache_dir, dataset_path, bf16))
    return jobs


def with_task_defaults(cfg: TrainConfig, task: TaskSpec) -> TrainConfig:
    """What the task file decides where the protocol and `--set` are silent: the observation dims the networks read
    (written into the run's config, so a resume and the pretraining cache key see it; a run wanting every dim of
    such a task says so with `--set pretrain.observation_dims=[[0,N]]`)."""
    dims = cfg.pretrain.observation_dims
    if dims is None and task.network_observation is not None:
        dims = tuple(tuple(r) for r in task.network_observation)
    problem = None if dims is None else ranges_problem(dims, task.obs_dim)
    if problem:
        raise ConfigError(f"pretrain.observation_dims {problem} of task {task.name}")
    return cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(update={"observation_dims": dims})})


def plan_resume(resume: Path, cache_dir: Path, device: str | None = None, wandb: str | None = None) -> list[TrainJob]:
    """The run in `resume` (a seed directory), or every seed run under it (a group directory).

    A run continues on the device and W&B project it recorded, unless `device` / `wandb` say otherwise.
    """
    dirs = [resume] if (resume / "config.yaml").exists() else sorted(p.parent for p in resume.glob("*/config.yaml"))
    if not dirs:
        raise SpaarsError(f"{resume}: no run (config.yaml) found to resume")
    jobs = []
    for d in dirs:
        cfg, facts = load_run_config(d)
        cfg = cfg.model_copy(update={k: v for k, v in (("device", device), ("wandb", wandb)) if v is not None})
        jobs.append(TrainJob(cfg, d, cache_dir, facts.dataset_path, facts.bf16, resume=(d / "checkpoint.pt").exists(),
                             precision=facts.precision))
    return jobs


def _run_one(job: TrainJob) -> dict:
    """Process entry point for one seed (spawned: each seed is its own process with its own threads)."""
    from spaars_robot.train.runner import Runner

    job.run_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(job.config, job.run_dir, job.cache_dir, job.dataset_path, job.bf16,
                    show_progress=job.show_progress, command=job.command, precision=job.precision)
    return runner.run(resume=job.resume)


def run_jobs(jobs: list[TrainJob], workers: int, command: str) -> list[dict]:
    """Run every job, `workers` processes at a time (0: one per seed up to the CPU count); summaries in order."""
    parallel = workers or min(len(jobs), os.cpu_count() or 1)
    several = len(jobs) > 1 and parallel > 1
    jobs = [replace(job, command=command, show_progress=not several,
                    config=job.config.model_copy(update={"threads": 1}) if several else job.config) for job in jobs]
    if parallel == 1:
        return [_run_one(job) for job in jobs]
    with ProcessPoolExecutor(parallel, mp_context=get_context("spawn")) as pool:
        return list(pool.map(_run_one, jobs))
