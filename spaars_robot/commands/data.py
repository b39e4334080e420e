"""`spaars-robot data collect|import|info`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from spaars_robot.commands.app import app, console
from spaars_robot.data.locate import datasets_root, resolve_dataset
from spaars_robot.errors import ConfigError

data_app = typer.Typer(
    help="Make, import and inspect offline datasets (Minari layout).", no_args_is_help=True
)
app.add_typer(data_app, name="data")



class QualityChoice(StrEnum):
    """D4RL's dataset qualities (train/collect.py says how each is made; `mixed` is kitchen's scripted data,
    `diverse` antmaze's waypoint-driven, scripted Ant)."""

    random = "random"
    medium = "medium"
    expert = "expert"
    medium_replay = "medium-replay"
    medium_expert = "medium-expert"
    mixed = "mixed"
    diverse = "diverse"


@data_app.command("collect")
def data_collect(
    task: Annotated[str, typer.Option(help="Task name (sim/tasks/<name>.yaml) or a task YAML path.")],
    quality: Annotated[QualityChoice, typer.Option(help="Behaviour quality, as D4RL's.")] = QualityChoice.medium,
    steps: Annotated[int | None, typer.Option(
        help="Transitions to roll out into the dataset. Default: D4RL's size for the task and quality (the task "
             "file's quality.<q>.steps: kitchen-mixed 140,000), else 1,000,000.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the behaviour run and the rollout.")] = 0,
    train_budget: Annotated[
        int, typer.Option(help="Max SAC env steps for the behaviour policy.")
    ] = 1_000_000,
    eval_every: Annotated[int, typer.Option(help="Env steps between behaviour-policy evaluations.")] = 10_000,
    random_steps: Annotated[
        int, typer.Option(help="Uniform-action warm-up steps before SAC updates.")
    ] = 5_000,
    threads: Annotated[
        int, typer.Option(help="torch threads (use 1 per process when collecting in parallel).")
    ] = 2,
    checkpoint_every: Annotated[
        int, typer.Option(help="Env steps between resumable behaviour checkpoints.")
    ] = 10_000,
    shard_steps: Annotated[int, typer.Option(help="Rollout transitions per resumable shard.")] = 50_000,
    root: Annotated[
        Path | None, typer.Option(help="Dataset root (default $SPAARS_DATASETS or ./datasets).")
    ] = None,
    behaviour_policy: Annotated[
        Path | None,
        typer.Option(help="A kept SAC actor (a behaviour run's policy_step*.pt) to roll out instead of training "
                          "one (medium, expert; diverse: an ant-goal actor, in place of the scripted Ant)."),
    ] = None,
    safety_spec: Annotated[
        str | None,
        typer.Option(help="Collect under this safety spec (a name under safety/, e.g. the task's, or a path): the "
                          "behaviour policy trains, is evaluated and rolls out through the SafetyLayer serve runs, "
                          "and the dataset stores the applied actions, as <task>-<quality>-safe-v0 (the task's own "
                          "spec) or <task>-<quality>-safe-<spec>-v0. Default: no layer."),
    ] = None,
) -> None:
    """Train a behaviour policy to a quality level (as D4RL did) and roll out a dataset; resumable."""
    from pydantic import ValidationError

    from spaars_robot.config.loading import format_validation_error
    from spaars_robot.config.tasks import default_dataset_steps, load_task
    from spaars_robot.data.summary import summarize
    from spaars_robot.train.collect import CollectConfig, collect

    spec = load_task(task)
    try:
        cfg = CollectConfig(
            steps=default_dataset_steps(spec, quality.value) if steps is None else steps,
            seed=seed,
            train_budget=train_budget,
            eval_every=eval_every,
            random_steps=min(random_steps, train_budget),
            checkpoint_every=checkpoint_every,
            shard_steps=shard_steps,
        )
    except ValidationError as exc:
        raise ConfigError(format_validation_error("command-line options", exc)) from exc
    path = collect(spec, quality.value, root or datasets_root(), cfg, threads=threads,  # type: ignore[arg-type]
                   behaviour_policy=behaviour_policy, safety_spec=safety_spec)
    print_summary(summarize(path))


@data_app.command("import")
def data_import(
    path: Annotated[
        Path, typer.Argument(help="A D4RL .hdf5 file, a Minari dataset directory (with data/), or a "
                                  "`serve --record` .mcap recording of deployed episodes.")
    ],
    task: Annotated[
        str, typer.Option(help="Task the data belongs to (dims and reference scores come from it).")
    ],
    name: Annotated[
        str | None,
        typer.Option(
            help="Dataset name; the id becomes spaars/<name>-v0 "
            "(default: from the file name, with a -d4rl/-minari/-deployed suffix)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset with the same name.")] = False,
    root: Annotated[
        Path | None, typer.Option(help="Dataset root (default $SPAARS_DATASETS or ./datasets).")
    ] = None,
) -> None:
    """Convert a local D4RL HDF5 file, Minari dataset or deployed recording to our format (no network)."""
    from spaars_robot.config.tasks import load_task
    from spaars_robot.data.importers import import_dataset
    from spaars_robot.data.summary import summarize

    if path.suffix == ".mcap":
        from spaars_robot.telemetry.deployed import import_recording

        out = import_recording(path, load_task(task), root or datasets_root(), name=name, overwrite=overwrite)
    else:
        out = import_dataset(path, load_task(task), root or datasets_root(), name=name, overwrite=overwrite)
    print_summary(summarize(out))


@data_app.command("info")
def data_info(
    path: Annotated[str, typer.Argument(help="Dataset directory, or an id like hopper-medium.")],
    root: Annotated[
        Path | None, typer.Option(help="Dataset root (default $SPAARS_DATASETS or ./datasets).")
    ] = None,
    safety_spec: Annotated[str | None, typer.Option(
        help="Also replay the dataset's actions through this safety spec (a name like hopper, or a YAML path) and say "
             "how many the layer would change: what `train --safety-spec` logs before training.")] = None,
) -> None:
    """Episodes, steps, return statistics and the D4RL-normalised score; verifies checksums."""
    from spaars_robot.data.summary import summarize

    dataset_dir = resolve_dataset(path, root)
    spec = spec_file = None
    if safety_spec is not None:  # a bad spec is one line before any output
        from spaars_robot.export.safety_binding import spec_path
        from spaars_robot.safety.spec import load_safety_spec

        spec_file = spec_path(safety_spec)
        if not spec_file.exists():
            raise ConfigError(f"--safety-spec {safety_spec}: no such spec ({spec_file})")
        spec = load_safety_spec(spec_file)
    summary = summarize(dataset_dir)
    print_summary(summary)
    if spec is not None and spec_file is not None:
        from spaars_robot.data.dataset import OfflineDataset
        from spaars_robot.safety.data_check import describe, spec_on_data

        dataset = OfflineDataset.load(dataset_dir)
        spec.check_action_space(dataset.action_dim, f"dataset {summary.dataset_id}")
        spec.check_observation_space(dataset.obs_dim, f"dataset {summary.dataset_id}")
        result = spec_on_data(spec, dataset.obs.numpy(), dataset.action.numpy(), dataset.episode_start,
                              dataset.episode_length)
        typer.echo(describe(result, spec_file.name, summary.dataset_id))


@data_app.command("list")
def data_list(
    root: Annotated[
        Path | None, typer.Option(help="Dataset root (default $SPAARS_DATASETS or ./datasets).")
    ] = None,
) -> None:
    """Every dataset under the root, one line each: id, episodes, steps, task, env (metadata only, fast)."""
    from spaars_robot.data.catalog import list_datasets

    root = root or datasets_root()
    entries = list_datasets(root)
    if not entries:
        typer.echo(f"no datasets under {root}")
        return
    width = max(len(e.dataset_id) for e in entries)
    for e in entries:
        if e.status != "ok":
            typer.echo(f"{e.dataset_id:<{width}}  {e.status}  ({e.path})")
            continue
        typer.echo(f"{e.dataset_id:<{width}}  episodes {e.episodes!s:>6}  steps {e.steps!s:>8}  "
                   f"task {e.task or '-'}  env {e.env_id or '-'}")


def print_summary(summary) -> None:
    from rich.table import Table

    table = Table(title=summary.dataset_id, show_header=False)
    for key, value in summary.model_dump().items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)
