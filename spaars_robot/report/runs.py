"""Finding finished runs in whatever the user points at, and refusing anything that is not one in one line.

A run is known by its summary (written by `train/runner.py`, compacted by `train/summaries.py`). The same run
can be reached twice, e.g. a sweep's runs root holds both `<run>/seed0/summary.json` and
`summaries/<task>_<label>_<protocol>_seed0.json`: it is counted once, from its run directory, which also has
`metrics.csv` (the gate's advantage scale per evaluation) and `checkpoint.pt` (the policy, for a rollout).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from spaars_robot.errors import SpaarsError
from spaars_robot.train.summaries import summary_label, summary_name

SUMMARY_KEYS = ("task", "algo", "protocol", "seed", "variant", "final_normalized", "offline_normalized",
                "early_out_of_support_rate", "early_falls", "curve")
CURVE_KEYS = ("step", "normalized_mean", "train_raw_rate", "eval_raw_rate", "out_of_support_rate", "falls")
COMPACT_PATTERN = "*_seed*.json"  # summary_name(): <task>_<label>_<protocol>_seed<N>.json


@dataclass(frozen=True)
class Run:
    """One finished seed: its summary, the file it came from and, when known, its run directory."""

    summary: dict
    source: Path
    run_dir: Path | None = None

    @property
    def task(self) -> str:
        return self.summary["task"]

    @property
    def protocol(self) -> str:
        return self.summary["protocol"]

    @property
    def label(self) -> str:
        """The algorithm and every way the run departs from its protocol, e.g. 'spaars-no-concurrent-bc'."""
        return summary_label(self.summary)

    @property
    def seed(self) -> int:
        return int(self.summary["seed"])

    @property
    def group(self) -> tuple[str, str, str]:
        """(task, protocol, label): the seeds of one group are what a table row summarises."""
        return self.task, self.protocol, self.label

    @property
    def online_curve(self) -> list[dict]:
        """Evaluation rows after the offline start (row 0 is the policy before any online step)."""
        return self.summary["curve"][1:]

    def metrics_rows(self) -> list[dict] | None:
        """The run directory's metrics.csv rows (more columns than the summary's curve), None without one."""
        if self.run_dir is None or not (self.run_dir / "metrics.csv").exists():
            return None
        with open(self.run_dir / "metrics.csv") as fh:
            return list(csv.DictReader(fh))

    @property
    def checkpoint(self) -> Path | None:
        path = None if self.run_dir is None else self.run_dir / "checkpoint.pt"
        return path if path is not None and path.exists() else None


def has_online_steps(runs: list[Run]) -> bool:
    """False for a group of `offline` runs: one evaluation (the offline policy), no curve, no online safety figures."""
    return any(r.online_curve for r in runs)


def read_summary(path: Path) -> dict:
    """A run summary, checked for every field the report reads; anything else is one clear error."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpaarsError(f"{path}: not a run summary ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(summary, dict):
        raise SpaarsError(f"{path}: not a run summary (a JSON {type(summary).__name__}, not an object)")
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        raise SpaarsError(f"{path}: not a run summary (missing {', '.join(missing)})")
    curve = summary["curve"]
    if not isinstance(curve, list) or not curve or not all(isinstance(r, dict) for r in curve):
        raise SpaarsError(f"{path}: not a run summary ('curve' must be a non-empty list of evaluation rows)")
    absent = sorted({k for row in curve for k in CURVE_KEYS if k not in row})
    if absent:
        raise SpaarsError(f"{path}: not a run summary (curve rows lack {', '.join(absent)})")
    variant = summary["variant"]
    if not isinstance(variant, dict) or not {"concurrent_bc", "hard_switch"} <= set(variant):
        raise SpaarsError(f"{path}: not a run summary ('variant' must hold concurrent_bc and hard_switch)")
    switches = summary.get("switch") or []
    if not isinstance(switches, list) or not all(isinstance(e, dict) and isinstance(e.get("step"), int)
                                                 for e in switches):
        raise SpaarsError(f"{path}: not a run summary ('switch' must be a list of records with an integer step)")
    numbers = [summary["final_normalized"], summary["offline_normalized"],
               *(row[k] for row in curve for k in ("step", "normalized_mean", "train_raw_rate"))]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        raise SpaarsError(f"{path}: not a run summary (scores, steps and raw shares must be numbers)")
    return summary


def _runs_in_directory(path: Path) -> list[Run]:
    """Compact summaries directly in `path` or in its `summaries/`, and every run directory below it."""
    runs = [Run(read_summary(p), p) for folder in (path, path / "summaries")
            for p in sorted(folder.glob(COMPACT_PATTERN))]
    runs += [Run(read_summary(p), p, p.parent) for p in sorted(path.rglob("summary.json"))]
    if not runs:
        raise SpaarsError(f"{path}: no finished runs here (no {COMPACT_PATTERN} summaries, no run directory "
                          "with a summary.json below it)")
    return runs


def find_runs(paths: list[Path]) -> list[Run]:
    """Every finished run named by `paths` (summary files, directories of them, run directories, a sweep's
    runs root), each once, sorted by group and seed."""
    if not paths:
        raise SpaarsError("report: give at least one summary file, run directory or sweep directory")
    found: list[Run] = []
    for path in paths:
        if path.is_dir():
            found += _runs_in_directory(path)
        elif path.is_file():
            found.append(Run(read_summary(path), path, path.parent if path.name == "summary.json" else None))
        else:
            raise SpaarsError(f"{path}: no such file or directory")
    unique: dict[str, Run] = {}
    for run in found:
        name = summary_name(run.summary)
        seen = unique.get(name)
        if seen is not None and seen.summary["final_normalized"] != run.summary["final_normalized"]:
            raise SpaarsError(f"{seen.source} and {run.source} are the same run ({name}) with different results; "
                              "report one of them")
        if seen is None or (seen.run_dir is None and run.run_dir is not None):
            unique[name] = run
    return sorted(unique.values(), key=lambda r: (r.group, r.seed))
