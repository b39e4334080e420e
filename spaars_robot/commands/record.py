"""`spaars-robot record recover`: salvage a recording whose server was killed before it wrote the index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spaars_robot.commands.app import app, console

record_app = typer.Typer(help="Work with `serve --record` MCAP recordings.", no_args_is_help=True)
app.add_typer(record_app, name="record")


@record_app.command("recover")
def record_recover(
    recording: Annotated[Path, typer.Argument(help="The cut recording (kill -9, power loss, full disk).")],
    out: Annotated[Path, typer.Argument(help="A new MCAP file to write everything salvageable to.")],
) -> None:
    """Copy every complete, CRC-checked chunk of a recording into a new, indexed MCAP file."""
    from spaars_robot.telemetry.mcap_log import recover_mcap

    result = recover_mcap(recording, out)
    how = "the recording was complete" if result.complete else f"stopped at the cut: {result.problem}"
    console.print(f"recovered {result.messages} messages into {out} ({how})", highlight=False, soft_wrap=True)
