"""A trial process: the real `spaars-robot train` CLI, in a process that dies when its parent dies.

`kill -9` of a sweep must not leave its trials training on, unwatched, and racing the next run of the sweep
for the same run directories. Linux's PR_SET_PDEATHSIG does it without any cooperation from the parent: the
kernel sends SIGKILL to the child when the thread that started it exits, however it exits. It is set by a
few lines of Python that then run the CLI in the same interpreter (`runpy`), rather than by `preexec_fn`,
which is unsafe in a process with threads (a Ray worker); and the parent's pid is checked after setting it,
since a parent that died before the call would otherwise leave an orphan that is never signalled.
Everything is killed with SIGKILL, which is safe: `train` writes every file atomically and resumes exactly.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from spaars_robot.sweep.trials import Trial

# argv: [-c, parent pid, train args...]. PR_SET_PDEATHSIG = 1 (linux/prctl.h).
_DIE_WITH_PARENT = """\
import ctypes, os, runpy, signal, sys
if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL) != 0:
    sys.exit("spaars-robot sweep: prctl(PR_SET_PDEATHSIG) failed")
if os.getppid() != int(sys.argv[1]):
    os._exit(137)
sys.argv = ["spaars-robot", *sys.argv[2:]]
runpy.run_module("spaars_robot.cli", run_name="__main__", alter_sys=True)
"""

TRIAL_LOG = "sweep.log"  # the trial's stdout and stderr, in its run directory (appended across resumes)


def trial_env() -> dict[str, str]:
    """One thread per trial process: parallel 1-thread processes are the fastest way to run several seeds
    (BENCHMARKS "Several seeds"); `train`'s config already sets torch to 1 thread, this covers OpenMP/MKL."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get(
        "MUJOCO_GL", "egl")}


def start_trial(trial: Trial, cwd: Path | None = None) -> subprocess.Popen:
    """Start `spaars-robot train` for `trial` (new or `--resume`), output appended to RUN_DIR/sweep.log."""
    trial.run_dir.mkdir(parents=True, exist_ok=True)
    log = open(trial.run_dir / TRIAL_LOG, "ab")
    try:
        return subprocess.Popen([sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *trial.train_args()],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=trial_env(),
                                cwd=cwd)
    finally:
        log.close()  # the child holds its own descriptor


def last_error(trial: Trial) -> str:
    """The trial's last `error:` line (train's one-line errors), else its log's last line."""
    try:
        lines = (trial.run_dir / TRIAL_LOG).read_text(errors="replace").splitlines()
    except OSError:
        return "no output"
    errors = [line for line in lines if line.startswith("error:") or "Error" in line]
    return (errors or lines or ["no output"])[-1].strip()


def stop_all(processes: list[subprocess.Popen], grace_seconds: float = 20.0) -> None:
    """SIGINT to every trial (train says how to resume and exits), SIGKILL to any still there after the grace."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace_seconds
    for process in processes:
        try:
            process.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
