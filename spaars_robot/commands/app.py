"""The typer application object and shared console; commands register themselves in `commands/`."""
from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup

PIPELINE = ("data", "train", "gate", "transition", "sweep", "plot", "report", "export", "serve", "sim", "demo", "dashboard", "keys", "sign")


class PipelineGroup(TyperGroup):
    """Lists commands in the order a user walks the pipeline (click sorts alphabetically, typer groups last)."""

    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: PIPELINE.index(n) if n in PIPELINE else len(PIPELINE))

os.environ.setdefault("MUJOCO_GL", "egl")

app = typer.Typer(
    help="spaars-robot: offline data -> SPAARS training -> ONNX bundle -> safe onboard runtime.\n\n"
    "User mistakes print one line; add --debug for the traceback.",
    cls=PipelineGroup, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=True,
    rich_markup_mode=None,  # help strings are plain text: rich markup ate "[default: ...]" in several of them
)
console = Console()
err_console = Console(stderr=True)
state = {"debug": False}


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False) -> None:
    state["debug"] = debug
