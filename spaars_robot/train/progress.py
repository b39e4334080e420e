"""Progress for long jobs (`train`, `data collect`): a live bar in a terminal, plain lines everywhere else.

rich's bar redraws one line in place, which a log file (CI, nohup, a cluster job's output) cannot show:
there it printed nothing until the job ended. `LineProgress` prints self-contained lines instead, so a
log says what the job is doing (phase, step/total, rate, last score, ETA) while it runs, at most one line
per task every `SPAARS_PROGRESS_SECONDS` (default 30 s), plus one whenever the description changes (a new
phase or evaluation) and one when a task completes. Several seed processes share one terminal the same way,
because whole lines from several processes interleave readably where redrawn bars do not.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import TextIO

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from spaars_robot.errors import ConfigError

DEFAULT_EVERY_SECONDS = 30.0


@dataclass
class _Task:
    description: str
    total: float
    completed: float
    start_completed: float
    started: float = field(default_factory=time.perf_counter)
    last_line: float = 0.0
    finished: bool = False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class LineProgress:
    """Plain progress lines for a log file: `HH:MM:SS description: done/total (pct) rate/s, ETA ...`."""

    def __init__(self, every_seconds: float = DEFAULT_EVERY_SECONDS, stream: TextIO | None = None) -> None:
        self.every_seconds, self.stream = every_seconds, stream
        self.tasks: list[_Task] = []

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, completed: int = 0) -> int:
        self.tasks.append(_Task(description, float(total or 0), float(completed), float(completed)))
        self._print(self.tasks[-1])
        return len(self.tasks) - 1

    def update(self, task_id: int, *, completed: float | None = None, description: str | None = None) -> None:
        task = self.tasks[task_id]
        changed = description is not None and description != task.description
        if description is not None:
            task.description = description
        if completed is not None:
            task.completed = float(completed)
        done = task.total > 0 and task.completed >= task.total
        now = time.perf_counter()
        if changed or (done and not task.finished) or now - task.last_line >= self.every_seconds:
            task.finished = done
            self._print(task)

    def line(self, task: _Task) -> str:
        """One self-contained line: what, how far, how fast, how long still."""
        elapsed = time.perf_counter() - task.started
        rate = (task.completed - task.start_completed) / elapsed if elapsed > 0 else 0.0
        text = f"{time.strftime('%H:%M:%S')} {task.description}: {task.completed:.0f}/{task.total:.0f}"
        if task.total > 0:
            text += f" ({100 * task.completed / task.total:.0f}%)"
        if rate > 0:
            text += f", {rate:.1f}/s"
            left = task.total - task.completed
            text += ", done" if left <= 0 else f", ETA {_duration(left / rate)}"
        elif task.total > 0 and task.completed >= task.total:
            text += ", done"
        return text

    def _print(self, task: _Task) -> None:
        task.last_line = time.perf_counter()
        print(self.line(task), file=self.stream or sys.stdout, flush=True)


def progress_every_seconds() -> float:
    """`SPAARS_PROGRESS_SECONDS`: seconds between plain progress lines of one task (default 30)."""
    raw = os.environ.get("SPAARS_PROGRESS_SECONDS", "")
    try:
        seconds = float(raw) if raw else DEFAULT_EVERY_SECONDS
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise ConfigError(f"SPAARS_PROGRESS_SECONDS={raw!r}: expected a number of seconds >= 0")
    return seconds


ProgressDisplay = Progress | LineProgress  # what the loops call: add_task(...), update(...)


def make_progress(live: bool = True) -> ProgressDisplay:
    """rich's live bar when `live` and stdout is a terminal; plain lines otherwise."""
    if live and sys.stdout.isatty():
        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return LineProgress(progress_every_seconds())
