"""The console script: every command has help; user errors are one line, --debug shows the traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spaars_robot.cli import main
from spaars_robot.commands.app import app

runner = CliRunner()


def command_paths() -> list[list[str]]:
    """Every registered command and group, found from the app (new commands are covered automatically)."""
    import typer.main

    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(command, prefix: list[str]) -> None:
        paths.append(prefix)
        for name, sub in getattr(command, "commands", {}).items():
            if not sub.hidden:
                walk(sub, [*prefix, name])

    walk(root, [])
    return paths


def test_every_command_has_help() -> None:
    paths = command_paths()
    assert ["data", "collect"] in paths and ["data", "import"] in paths and ["data", "info"] in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output
        if path:
            command = typer_command(path)
            assert command.help or command.short_help, f"`spaars-robot {' '.join(path)}` has no help text"


def typer_command(path: list[str]):
    import typer.main

    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def test_data_import_help_explains_formats() -> None:
    result = runner.invoke(app, ["data", "import", "--help"])
    assert "D4RL" in result.output and "Minari" in result.output and "--task" in result.output


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "info", "/nonexistent/dataset"], "error: dataset /nonexistent/dataset not found"),
        (
            ["data", "collect", "--task", "hoper", "--root", "/tmp/unused"],
            "error: unknown task 'hoper'; known tasks:",
        ),
        (["data", "collect", "--task", "hopper", "--quality", "great"], "error: Invalid value for '--quality': 'great' is not one of"),
        (
            ["data", "collect", "--task", "hopper", "--steps", "0"],
            "error: command-line options: steps: Input should",
        ),
        (
            ["data", "import", "/nonexistent.hdf5", "--task", "hopper"],
            "error: /nonexistent.hdf5: no such file",
        ),
    ],
)
def test_user_errors_are_one_line_with_exit_2(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys, "argv", ["spaars-robot", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err


def test_debug_flag_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from spaars_robot.errors import ConfigError

    monkeypatch.setattr(sys, "argv", ["spaars-robot", "--debug", "data", "collect", "--task", "hoper"])
    with pytest.raises(ConfigError, match="unknown task"):
        main()


def test_console_script_runs_as_a_process() -> None:
    """The installed `spaars-robot` script itself (not just the Python function): help; exit 2 on errors."""
    script = Path(sys.executable).parent / "spaars-robot"
    assert script.exists(), "the package is not installed with its console script (pip install -e .)"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and "data" in result.stdout
    bad = subprocess.run(
        [str(script), "data", "info", "/nonexistent"], capture_output=True, text=True, timeout=60, check=False
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
