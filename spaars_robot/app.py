"""The typer application object and shared console; commands register themselves in `commands/`."""
from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

os.environ.setdefault("MUJOCO_GL", "egl")

app = typer.Typer(
    help="spaars-robot: offline data -> SPAARS training -> ONNX bundle -> safe onboard runtime.\n\n"
    "User mistakes print one line; add --debug for the traceback.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
)
console = Console()
err_console = Console(stderr=True)
state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")) -> None:
    state["debug"] = debug


def datasets_root() -> Path:
    """Where datasets live: $SPAARS_DATASETS, else ./datasets."""
    return Path(os.environ.get("SPAARS_DATASETS", "datasets"))
