"""Console entry point: registers every command group and turns user errors into one clear line.

Usage mistakes caught by the parser (an unknown choice, a missing option) are user errors like any other:
one `error:` line and exit code 2, never a multi-line usage box in a log.
"""
from __future__ import annotations

import sys

import typer
from rich.markup import escape

from spaars_robot.commands import register_all
from spaars_robot.commands.app import app, err_console, state
from spaars_robot.errors import SpaarsError

register_all()
# typer vendors its own click: find its ClickException (the base of every parser error) from a public name
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except SpaarsError as exc:
        if state["debug"]:
            raise
        # escaped: a message may hold brackets (`pip install 'spaars-robot[wandb]'`) that rich would take as markup
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `spaars-robot` / `spaars-robot data`: the help
            print(exc.format_message())
            sys.exit(exc.exit_code)
        message = exc.format_message().replace("Value error, ", "")  # pydantic-style prefix of typer choices
        err_console.print(f"error: {message} (see --help)", markup=False, highlight=False,
                          soft_wrap=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        err_console.print("interrupted; re-run the same command to resume")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
