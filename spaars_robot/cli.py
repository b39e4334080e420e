"""Console entry point: registers every command group and turns user errors into one clear line."""
from __future__ import annotations

import sys

from spaars_robot.app import app, err_console, state
from spaars_robot.errors import SpaarsError
from spaars_robot.commands import register_all

register_all()


def main() -> None:
    try:
        app()
    except SpaarsError as exc:
        if state["debug"]:
            raise
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; re-run the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
