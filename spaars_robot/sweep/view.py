"""What every trial is doing, read from the files its `train` process writes, and shown as one view.

No channel between the sweep and its trials: a trial's run directory already says everything (train.log has
a line per pretraining checkpoint and per evaluation, metrics.csv a row per evaluation with the online rate,
the compact summary appears when it is finished). Reading files works the same for local processes and for
Ray trials on a shared filesystem, and for a sweep restarted while its trials' files stay.

In a terminal the view is a rich table redrawn in place (trial, phase, step, last score, ETA); elsewhere (a
log file, CI, nohup) plain lines: one when a trial starts, changes phase, is evaluated or ends, and otherwise
at most one per trial every `$SPAARS_PROGRESS_SECONDS` (train/progress.py's rule).
"""
from __future__ import annotations

import csv
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from spaars_robot.sweep.trials import Status, Trial
from spaars_robot.train.progress import progress_every_seconds

_PRETRAIN = re.compile(r"pretrain step (\d+)/(\d+) \((\d+(?:\.\d+)?) updates/s\)")


@dataclass(frozen=True)
class TrialState:
    """A trial as its files show it now."""

    phase: str          # waiting | starting | pretrain | <agent phase> | done | failed
    step: int
    total: int
    score: float | None  # last evaluation's D4RL-normalised score
    eta_seconds: float | None  # to the end of the current stage (pretraining or online)

    def describe(self) -> str:
        score = "-" if self.score is None else f"{self.score:.1f}"
        eta = "" if self.eta_seconds is None else f", ETA {_duration(self.eta_seconds)}"
        return f"{self.phase} {self.step}/{self.total} score {score}{eta}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _last_pretrain_line(run_dir: Path) -> tuple[int, int, float] | None:
    try:
        text = (run_dir / "train.log").read_text(errors="replace")
    except OSError:
        return None
    matches = _PRETRAIN.findall(text)
    if not matches:
        return None
    step, total, rate = matches[-1]
    return int(step), int(total), float(rate)


def _last_metrics_row(run_dir: Path) -> dict | None:
    try:
        with open(run_dir / "metrics.csv", newline="") as fh:  # replaced atomically by the runner
            rows = list(csv.DictReader(fh))
    except OSError:
        return None
    return rows[-1] if rows else None


def read_state(trial: Trial, running: bool, failed: bool = False) -> TrialState:
    """The trial's state from its summary, metrics.csv and train.log (in that order of precedence)."""
    row = _last_metrics_row(trial.run_dir)
    score = float(row["normalized_mean"]) if row and row.get("normalized_mean") not in (None, "") else None
    if trial.status() is Status.done:
        return TrialState("done", trial.online_steps, trial.online_steps, score, None)
    if failed:
        return TrialState("failed", int(row["step"]) if row else 0, trial.online_steps, score, None)
    if row is not None:
        step, rate = int(row["step"]), float(row.get("env_steps_per_second") or 0)
        eta = (trial.online_steps - step) / rate if rate > 0 and running else None
        return TrialState(row["phase"], step, trial.online_steps, score, eta)
    pretrain = _last_pretrain_line(trial.run_dir)
    if pretrain is not None:
        step, total, rate = pretrain
        return TrialState("pretrain", step, total, None, (total - step) / rate if rate > 0 and running else None)
    return TrialState("starting" if running else "waiting", 0, trial.online_steps, None, None)


class SweepView:
    """The live table (terminal) or plain progress lines (anything else) for all trials of a sweep."""

    def __init__(self, trials: list[Trial], console: Console, live: bool | None = None) -> None:
        self.trials, self.console = trials, console
        self.live = (sys.stdout.isatty() if live is None else live)
        self.every_seconds = progress_every_seconds()
        self.started = time.perf_counter()
        self._printed: dict[str, tuple[str, float]] = {}  # trial -> (phase/score key, when printed)
        self._done_before = {t.name for t in trials if t.status() is Status.done}  # not news in a log
        self._live: Live | None = None

    def __enter__(self) -> SweepView:
        if self.live:
            # auto_refresh=False: no refresh thread, so trial processes are always forked from a single-threaded
            # sweep, and the table is redrawn by `update`, when the files have been read anyway
            self._live = Live(console=self.console, auto_refresh=False, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def update(self, running: set[str], failed: set[str]) -> None:
        states = {t.name: read_state(t, t.name in running, t.name in failed) for t in self.trials}
        if self._live is not None:
            self._live.update(self.table(states), refresh=True)
        else:
            self._lines(states, running)

    def table(self, states: dict[str, TrialState]) -> Table:
        """One row per trial of this run; trials done before it started are only counted (a grid can be long)."""
        done = sum(s.phase == "done" for s in states.values())
        earlier = len(self._done_before & set(states))
        table = Table(title=f"sweep: {done}/{len(states)} trials done ({earlier} before this run), "
                      f"{_duration(time.perf_counter() - self.started)} elapsed", title_justify="left")
        for column in ("trial", "phase", "step", "last score", "ETA (stage)"):
            table.add_column(column, justify="right" if column in ("step", "last score") else "left")
        for name, s in states.items():
            if name in self._done_before:
                continue
            table.add_row(name, s.phase, f"{s.step}/{s.total}", "-" if s.score is None else f"{s.score:.1f}",
                          "" if s.eta_seconds is None else _duration(s.eta_seconds))
        return table

    def _lines(self, states: dict[str, TrialState], running: set[str]) -> None:
        now = time.perf_counter()
        for name, s in states.items():
            if s.phase == "waiting" or name in self._done_before:
                continue
            key = f"{s.phase} {s.score}"
            before = self._printed.get(name)
            if before is None or before[0] != key or (name in running and now - before[1] >= self.every_seconds):
                self._printed[name] = (key, now)
                self.console.print(f"{time.strftime('%H:%M:%S')} {name}: {s.describe()}", highlight=False,
                                   soft_wrap=True)
