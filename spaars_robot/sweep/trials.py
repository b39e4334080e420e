"""The trials of a sweep: the cross product of its grids, each planned exactly as `train` plans it.

Planning goes through `train/jobs.plan_new`, the function `train` itself calls, so a trial's run directory and
summary file name are the ones `train` will write (the `-set-<hash>` tag included); that is what lets a sweep
find the committed `benchmarks/results/train/<task>_<label>_<protocol>_seed<N>.json` summaries done.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from spaars_robot.errors import SpaarsError
from spaars_robot.sweep.spec import ABLATION_FLAGS, Grid, SweepFile
from spaars_robot.train.jobs import plan_new
from spaars_robot.train.summaries import config_summary_name


class Status(StrEnum):
    done = "done"      # its summary is in the results directory: never rerun
    resume = "resume"  # its run directory exists: `train --resume RUN_DIR` continues it exactly
    new = "new"


@dataclass(frozen=True)
class Trial:
    """One `train` invocation (one task, algorithm, variant, seed) and where it leaves its results."""

    task: str
    dataset: str | None  # None for sac (online from scratch)
    algo: str
    ablation: str
    variant: str
    sets: tuple[str, ...]
    seed: int
    protocol: str
    safety_spec: str
    run_dir: Path
    runs_root: Path
    summary_path: Path
    online_steps: int
    pretrain_steps: int
    precision: str = "fp32"  # fp32 | bf16: names the run ('-bf16'), so it is fixed when the sweep is planned
    device: str | None = None  # `train --device`; None: train's default (cpu). Never names the run

    @property
    def name(self) -> str:
        """The summary file's stem, e.g. `hopper_spaars-no-concurrent-bc_short_seed0`: unique in a sweep."""
        return self.summary_path.stem

    def status(self) -> Status:
        if self.summary_path.exists():
            return Status.done
        if (self.run_dir / "config.yaml").exists():
            return Status.resume
        return Status.new

    def train_args(self) -> list[str]:
        """`spaars-robot train ...` arguments that start this trial, or continue it when its run dir exists.

        `--runs-root` goes with `--resume` too: it places the pretraining cache, and a resume killed during
        pretraining continues from the cache's partial checkpoint only if it looks in the same cache.
        """
        results = ["--runs-root", str(self.runs_root), "--results-dir", str(self.summary_path.parent)]
        if self.status() is Status.resume:
            return ["train", "--resume", str(self.run_dir), *results]
        args = ["train", "--task", self.task, "--algo", self.algo, "--seeds", str(self.seed),
                "--protocol", self.protocol, "--run-dir", str(self.run_dir)]
        if self.dataset is not None:
            args += ["--dataset", self.dataset]
        args += [ABLATION_FLAGS[part] for part in self.ablation.split("+") if part != "none"]
        for item in self.sets:
            args += ["--set", item]
        if self.safety_spec != "default":
            args += ["--safety-spec", self.safety_spec]
        if self.precision != "fp32":
            args += ["--precision", self.precision]
        if self.device is not None:
            args += ["--device", self.device]
        return args + results

    def to_json(self) -> str:
        """The trial as JSON (what a Ray worker receives: no pickled objects of this package cross the wire)."""
        fields = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}
        return json.dumps(fields | {"sets": list(self.sets)})

    @classmethod
    def from_json(cls, text: str) -> Trial:
        fields = json.loads(text)
        for key in ("run_dir", "runs_root", "summary_path"):
            fields[key] = Path(fields[key])
        return cls(**fields | {"sets": tuple(fields["sets"])})


def plan_trials(sweep: SweepFile, grids: list[Grid], source: Path) -> list[Trial]:
    """Every trial of every grid, in file order (task, algorithm, ablation, variant, seed), duplicates once.

    Paths are made absolute here: Ray Tune runs a trial in a directory of its own, and a trial's run
    directory must not depend on where its process happens to start.
    """
    runs_root = sweep.runs_root.absolute()
    results_dir = (sweep.results_dir or sweep.runs_root / "summaries").absolute()
    trials: dict[str, Trial] = {}
    for index, grid in enumerate(grids):
        where = f"{source}: grids[{index}]" if sweep.grids else str(source)
        for task in grid.tasks:
            for algo in grid.algos:
                for ablation in grid.ablations:
                    for variant, sets in grid.variants.items():
                        for seed in grid.seeds:
                            trial = _plan_one(where, grid, task, algo, ablation, variant, sets, seed, runs_root,
                                              results_dir)
                            trials.setdefault(trial.name, trial)
    return list(trials.values())


def _plan_one(where: str, grid: Grid, task: str, algo: str, ablation: str, variant: str, sets: list[str],
              seed: int, runs_root: Path, results_dir: Path) -> Trial:
    variant_sets = [{"no-concurrent-bc": "online.concurrent_bc=false", "hard-switch": "online.hard_switch=true"}[p]
                    for p in ablation.split("+") if p != "none"]
    dataset = None if algo == "sac" else grid.datasets[task]
    spec = None if grid.safety_spec == "default" else grid.safety_spec
    try:
        (job,) = plan_new(task, dataset, None, algo, [seed], grid.protocol, list(sets), variant_sets, runs_root,
                          None, runs_root / "_pretrain_cache", grid.precision == "bf16", spec)
    except SpaarsError as exc:
        raise SpaarsError(f"{where}: {task} {algo} seed {seed}: {exc}") from exc
    cfg = job.config
    return Trial(task=task, dataset=dataset, algo=algo, ablation=ablation, variant=variant, sets=tuple(sets),
                 seed=seed, protocol=grid.protocol, safety_spec=grid.safety_spec, run_dir=job.run_dir,
                 runs_root=runs_root, summary_path=results_dir / config_summary_name(cfg, job.bf16),
                 online_steps=cfg.online.env_steps, pretrain_steps=0 if algo == "sac" else cfg.pretrain.steps,
                 precision=grid.precision, device=grid.device)
