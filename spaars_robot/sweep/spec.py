"""The sweep file: typed, strict (an unknown key is an error), one line per problem.

A sweep file is one grid (`tasks`, `algos`, `seeds`, ... at the top level) or several (`grids:`, a list of
the same fields); each grid is a cross product and a grid entry inherits every field it does not set from the
top level. Several grids exist because real grids are not one product: the committed `short` grid runs its
ablations on 2 seeds of one algorithm, not on 5 seeds of all four.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from spaars_robot.config.loading import load_yaml_model
from spaars_robot.config.training import Algo
from spaars_robot.errors import ConfigError

ABLATION_FLAGS = {"no-concurrent-bc": "--no-concurrent-bc", "hard-switch": "--hard-switch"}
Ablation = Literal["none", "no-concurrent-bc", "hard-switch", "no-concurrent-bc+hard-switch"]
GRID_FIELDS = ("tasks", "datasets", "algos", "ablations", "variants", "seeds", "protocol", "safety_spec", "precision",
               "device")


class GridFields(BaseModel):
    """The axes of one cross product and what every trial of it shares. Unset fields inherit."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[str] | None = Field(None, min_length=1, description="task names (sim/tasks/<name>.yaml)")
    datasets: dict[str, str] | None = Field(None, description="task -> dataset id or path; default <task>-medium")
    algos: list[Algo] | None = Field(None, min_length=1, description="algorithms, as `train --algo`")
    ablations: list[Ablation] | None = Field(None, min_length=1, description="'none' (default), "
                                             "'no-concurrent-bc', 'hard-switch' or both joined by '+'")
    variants: dict[str, list[str]] | None = Field(None, description="label -> `--set key=value` list; default "
                                                  "{default: []}. The label is for people; `train` names the "
                                                  "run from the values (set-<hash>)")
    seeds: list[int] | None = Field(None, min_length=1, description="distinct seeds >= 0")
    protocol: str | None = Field(None, description="smoke | short | paper, or a protocol YAML path; default short")
    safety_spec: str | None = Field(None, description="`train --safety-spec`: 'default' (the task's spec), 'none' "
                                    "or a spec name/path; the committed grid used 'none'")
    precision: Literal["fp32", "bf16"] | None = Field(
        None, description="`train --precision`; default fp32. Not 'auto': bf16 names the run ('-bf16'), so a sweep "
                          "must know each trial's precision before it runs to tell which trials are done")
    device: Literal["auto", "cpu", "cuda"] | None = Field(None, description="`train --device`; default: train's "
                                                          "(cpu). Does not name the run")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None:
            if any(s < 0 for s in seeds):
                raise ValueError(f"seeds must be >= 0, got {seeds}")
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds


class SweepFile(GridFields):
    """A whole sweep file: shared fields, optional `grids`, and where runs and summaries go."""

    grids: list[GridFields] | None = Field(None, min_length=1, description="several cross products")
    runs_root: Path = Field(Path("runs"), description="`train --runs-root`: where run directories go")
    results_dir: Path | None = Field(None, description="`train --results-dir`: where the compact summaries go "
                                     "(default RUNS_ROOT/summaries); a trial whose summary is there is done")


class Grid(BaseModel):
    """One grid with every field resolved (inherited values and defaults filled in)."""

    tasks: list[str]
    datasets: dict[str, str]
    algos: list[str]
    ablations: list[str]
    variants: dict[str, list[str]]
    seeds: list[int]
    protocol: str
    safety_spec: str
    precision: str
    device: str | None


def load_sweep(path: Path) -> tuple[SweepFile, list[Grid]]:
    """Read and validate `path`; every problem is one ConfigError line naming the file (and the grid)."""
    sweep = load_yaml_model(path, SweepFile)
    entries = sweep.grids or [GridFields()]
    grids = []
    for index, entry in enumerate(entries):
        where = f"{path}: grids[{index}]" if sweep.grids else f"{path}"
        values = {name: getattr(entry, name) if name in entry.model_fields_set else getattr(sweep, name)
                  for name in GRID_FIELDS}
        for required in ("tasks", "algos", "seeds"):
            if not values[required]:
                raise ConfigError(f"{where}: no {required} (set `{required}:` in the grid or at the top level)")
        unknown = sorted(set(values["datasets"] or {}) - set(values["tasks"]))
        if unknown and not sweep.grids:
            raise ConfigError(f"{where}: datasets names tasks not in `tasks`: {', '.join(unknown)}")
        grids.append(Grid(
            tasks=values["tasks"], algos=values["algos"], seeds=values["seeds"],
            datasets={task: (values["datasets"] or {}).get(task, f"{task}-medium") for task in values["tasks"]},
            ablations=values["ablations"] or ["none"], variants=values["variants"] or {"default": []},
            protocol=values["protocol"] or "short", safety_spec=values["safety_spec"] or "default",
            precision=values["precision"] or "fp32", device=values["device"]))
    return sweep, grids

