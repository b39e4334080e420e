"""`spaars-robot data collect|import|info`."""
from __future__ import annotations

from pathlib import Path

import typer

from spaars_robot.app import app, console, datasets_root
from spaars_robot.errors import ConfigError, SpaarsError

data_app = typer.Typer(help="Make, import and inspect offline datasets (Minari layout).", no_args_is_help=True)
app.add_typer(data_app, name="data")

QUALITIES = ("random", "medium", "expert", "medium-replay", "medium-expert")


@data_app.command("collect")
def data_collect(
    task: str = typer.Option(..., help="Task name (sim/tasks/<name>.yaml) or a task YAML path."),
    quality: str = typer.Option("medium", help="random | medium | expert | medium-replay | medium-expert"),
    steps: int = typer.Option(1_000_000, help="Transitions to roll out into the dataset."),
    seed: int = typer.Option(0, help="Seed of the behaviour run and the rollout."),
    train_budget: int = typer.Option(1_000_000, help="Max SAC env steps for the behaviour policy."),
    eval_every: int = typer.Option(10_000, help="Env steps between behaviour-policy evaluations."),
    random_steps: int = typer.Option(5_000, help="Uniform-action warm-up steps before SAC updates."),
    threads: int = typer.Option(2, help="torch threads (use 1 per process when collecting in parallel)."),
    checkpoint_every: int = typer.Option(10_000, help="Env steps between resumable behaviour checkpoints."),
    shard_steps: int = typer.Option(50_000, help="Rollout transitions per resumable shard."),
    root: Path | None = typer.Option(None, help="Dataset root (default $SPAARS_DATASETS or ./datasets)."),
) -> None:
    """Train a behaviour policy to a quality level (as D4RL did) and roll out a dataset; resumable."""
    from pydantic import ValidationError

    from spaars_robot.config.loading import format_validation_error
    from spaars_robot.config.tasks import load_task
    from spaars_robot.data.collect import CollectConfig, collect
    from spaars_robot.data.summary import summarize

    if quality not in QUALITIES:
        raise SpaarsError(f"unknown quality {quality!r}; use one of {', '.join(QUALITIES)}")
    spec = load_task(task)
    try:
        cfg = CollectConfig(steps=steps, seed=seed, train_budget=train_budget, eval_every=eval_every,
                            random_steps=min(random_steps, train_budget), checkpoint_every=checkpoint_every,
                            shard_steps=shard_steps)
    except ValidationError as exc:
        raise ConfigError(format_validation_error("command-line options", exc)) from exc
    path = collect(spec, quality, root or datasets_root(), cfg, threads=threads)  # type: ignore[arg-type]
    print_summary(summarize(path))


@data_app.command("import")
def data_import(
    path: Path = typer.Argument(..., help="A D4RL .hdf5 file, or a Minari dataset directory (with data/)."),
    task: str = typer.Option(..., help="Task the data belongs to (dims and reference scores come from it)."),
    name: str | None = typer.Option(None, help="Dataset name; the id becomes spaars/<name>-v0 "
                                       "(default: from the file name, with a -d4rl/-minari suffix)."),
    overwrite: bool = typer.Option(False, help="Replace an existing dataset with the same name."),
    root: Path | None = typer.Option(None, help="Dataset root (default $SPAARS_DATASETS or ./datasets)."),
) -> None:
    """Convert a local D4RL HDF5 file or Minari dataset to our format (never uses the network)."""
    from spaars_robot.config.tasks import load_task
    from spaars_robot.data.importers import import_dataset
    from spaars_robot.data.summary import summarize

    out = import_dataset(path, load_task(task), root or datasets_root(), name=name, overwrite=overwrite)
    print_summary(summarize(out))


@data_app.command("info")
def data_info(path: str = typer.Argument(..., help="Dataset directory, or an id like hopper-medium.")) -> None:
    """Episodes, steps, return statistics and the D4RL-normalised score; verifies checksums."""
    from spaars_robot.data.summary import summarize

    print_summary(summarize(resolve_dataset(path)))


def resolve_dataset(path: Path | str) -> Path:
    """A path, or a short id (`hopper-medium`, `spaars/hopper-medium-v0`) under the dataset root."""
    p = Path(path)
    if p.exists():
        return p
    root = datasets_root()
    for candidate in (root / p, root / "spaars" / p, root / "spaars" / f"{p}-v0"):
        if candidate.exists():
            return candidate
    raise SpaarsError(f"dataset {path} not found (looked at {p} and under {root})")


def print_summary(summary) -> None:
    from rich.table import Table

    table = Table(title=summary.dataset_id, show_header=False)
    for key, value in summary.model_dump().items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)
