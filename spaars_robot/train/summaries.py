"""Compact, committed JSON summaries of finished runs, and the statistics reported over seeds.

Run directories are large and not committed; these summaries are, so the `short` grid can be
completed over several sittings and BENCHMARKS.md regenerated from them (`spaars-robot report`, spaars_robot/report/).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spaars_robot.data.files import atomic_write_json

if TYPE_CHECKING:
    from spaars_robot.config.training import TrainConfig


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t interval over seeds (nan half-width for a single seed)."""
    from scipy.stats import t as student_t

    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return float(x.mean()) if len(x) else math.nan, math.nan
    quantile = float(student_t.ppf(0.975, len(x) - 1))
    return float(x.mean()), float(quantile * x.std(ddof=1) / math.sqrt(len(x)))


def dataset_label(task: str, dataset: str | None) -> str:
    """'' for the task's medium dataset, else e.g. 'on-medium-replay', so runs on two datasets never share a name.

    Every result committed before a second dataset per task existed was trained on `<task>-medium`; keeping that
    one unlabelled keeps their names. `dataset` is an id, a directory or a file (D4RL's `hopper-medium-v2.hdf5`).
    """
    if not dataset:
        return ""
    name = re.sub(r"-v\d+$", "", Path(dataset.rstrip("/")).name.removesuffix(".hdf5").removesuffix(".h5"))
    name = name.removeprefix(f"{task}-")
    return "" if name == "medium" else f"on-{name}"


def variant_label(algo: str, concurrent_bc: bool, hard_switch: bool, bf16: bool, tag: str = "",
                  safety: bool = False, dataset: str = "") -> str:
    """The algorithm plus every way a run departs from its protocol, e.g. 'spaars-no-concurrent-bc-bf16'.

    The run directory and the committed summary are both named from it, so two runs that differ in any
    of these can never write to the same place. `safety`: trained under its safety spec ('-safe'); results
    committed before the layer existed have no suffix and were trained without it. `dataset`: dataset_label().
    """
    tags = [algo] + (["no-concurrent-bc"] if not concurrent_bc else []) + (["hard-switch"] if hard_switch else []) \
        + (["bf16"] if bf16 else []) + (["safe"] if safety else []) + ([tag] if tag else []) \
        + ([dataset] if dataset else [])
    return "-".join(tags)


def run_name(task: str, algo: str, protocol: str, concurrent_bc: bool, hard_switch: bool, tag: str = "",
             bf16: bool = False, safety: bool = False, dataset: str = "") -> str:
    """The run-directory group name, e.g. 'hopper-spaars-no-concurrent-bc-short'."""
    return f"{task}-{variant_label(algo, concurrent_bc, hard_switch, bf16, tag, safety, dataset)}-{protocol}"


def config_label(cfg: TrainConfig, bf16: bool) -> str:
    """variant_label of a run about to start, from its resolved config: what train names its run directory from,
    and what a sweep predicts the run's summary name from, so the two can never disagree."""
    return variant_label(cfg.algo, cfg.online.concurrent_bc, cfg.online.hard_switch, bf16, cfg.tag,
                         cfg.safety_spec is not None, dataset_label(cfg.task, cfg.dataset))


def config_run_name(cfg: TrainConfig, bf16: bool) -> str:
    """run_name of a run about to start (its group directory under the runs root)."""
    return f"{cfg.task}-{config_label(cfg, bf16)}-{cfg.protocol}"


def config_summary_name(cfg: TrainConfig, bf16: bool) -> str:
    """summary_name of the summary this run will write when it finishes."""
    return f"{cfg.task}_{config_label(cfg, bf16)}_{cfg.protocol}_seed{cfg.seed}.json"


def summary_label(summary: dict) -> str:
    """variant_label of a finished run, read from its summary."""
    v = summary["variant"]
    return variant_label(summary["algo"], v["concurrent_bc"], v["hard_switch"], bool(summary.get("bf16")),
                         summary.get("tag") or "", summary.get("safety_spec") is not None,
                         dataset_label(summary["task"], summary.get("dataset")))


def summary_run_name(summary: dict) -> str:
    """run_name of a finished run, read from its summary (groups committed summaries like run directories)."""
    v = summary["variant"]
    return run_name(summary["task"], summary["algo"], summary["protocol"], v["concurrent_bc"], v["hard_switch"],
                    summary.get("tag") or "", bool(summary.get("bf16")), summary.get("safety_spec") is not None,
                    dataset_label(summary["task"], summary.get("dataset")))


def summary_name(summary: dict) -> str:
    """The committed file name of a finished run's summary; config_summary_name() predicts it before the run."""
    return f"{summary['task']}_{summary_label(summary)}_{summary['protocol']}_seed{summary['seed']}.json"


def write_compact_summary(summary: dict, results_dir: Path) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    compact = {k: v for k, v in summary.items() if k != "config"}
    compact["config_protocol"] = summary["config"]["protocol"]
    path = results_dir / summary_name(summary)
    atomic_write_json(path, compact)
    return path
