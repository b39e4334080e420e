"""The local backend: one `train` process per trial, `workers` at a time, from a single-threaded loop.

One 1-thread process per core is how several seeds run fastest here (BENCHMARKS "Several seeds"), which is
what the shell loop it replaced did in pairs; this loop starts the next trial as soon as any one ends
instead of waiting for the pair. The loop never starts a thread, because a trial's PR_SET_PDEATHSIG fires when
the *thread* that forked it exits (sweep/process.py); the view is redrawn from this loop for the same reason.
"""
from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from types import FrameType

from spaars_robot.sweep.process import last_error, start_trial, stop_all
from spaars_robot.sweep.trials import Status, Trial
from spaars_robot.sweep.view import SweepView

POLL_SECONDS = 0.5


@dataclass
class Outcome:
    """What a backend did: trials finished now, found finished before, and failed (name -> last error line)."""

    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the trials the way Ctrl-C does


def run_local(trials: list[Trial], workers: int, view: SweepView) -> Outcome:
    """Run every unfinished trial; on Ctrl-C or SIGTERM stop them (resumable) and re-raise KeyboardInterrupt."""
    outcome = Outcome(skipped=[t.name for t in trials if t.status() is Status.done])
    pending = [t for t in trials if t.status() is not Status.done]
    running: dict[str, tuple[Trial, subprocess.Popen]] = {}
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        while pending or running:
            while pending and len(running) < workers:
                trial = pending.pop(0)
                running[trial.name] = (trial, start_trial(trial))
            for name, (trial, process) in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                del running[name]
                if code == 0 and trial.status() is Status.done:
                    outcome.finished.append(name)
                else:
                    outcome.failed[name] = f"exit {code}: {last_error(trial)}"
            view.update(set(running), set(outcome.failed))
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        stop_all([process for _, process in running.values()])
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    view.update(set(), set(outcome.failed))
    return outcome
