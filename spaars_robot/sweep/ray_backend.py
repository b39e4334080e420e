"""The Ray backend: the same trials as Ray Tune trials, each declaring 1 CPU, each still the real `train`.

A Tune trial here is a thin function: it starts the trial's `train` process (sweep/process.py: it dies with the
Ray worker), waits, and reports the compact summary back to the driver, which writes it into the results
directory if the trial's node could not (a node without the driver's filesystem). The run directory is where
the sweep file puts it, not in Tune's trial directory, so a trial that fails or is preempted and retried by Tune
(`FailureConfig(max_failures=...)`), or rerun by a later `sweep` command, continues from its own
`checkpoint.pt` with `train --resume`, exactly. On a cluster, `runs_root` (and a dataset given as a path) must
be on a filesystem every node sees, as for any resumable job. Only Ray core and Tune are used (RLlib pins
another gymnasium); Ray is the optional `ray` extra.

Tune runs the function in a thread of a Ray worker, so the trial process is started from that thread and
PR_SET_PDEATHSIG ties it to it: a stopped or killed Ray worker takes its `train` process with it.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

from spaars_robot.data.files import atomic_write_json
from spaars_robot.errors import SpaarsError
from spaars_robot.sweep.local import Outcome, raise_interrupt
from spaars_robot.sweep.process import TRIAL_LOG, last_error, start_trial
from spaars_robot.sweep.trials import Status, Trial
from spaars_robot.sweep.view import SweepView

MAX_FAILURES = 2  # Tune retries a failed or preempted trial this often; each retry resumes it


def _trial_function(config: dict) -> None:
    """One Tune trial: run `train` for the trial (resuming it if its run directory exists), report its summary."""
    from ray import tune

    trial = Trial.from_json(config["trial"])
    if trial.status() is not Status.done:
        process = start_trial(trial, cwd=Path(config["cwd"]))  # relative dataset/protocol paths as on the driver
        code = process.wait()
        if code != 0 or trial.status() is not Status.done:
            raise RuntimeError(f"{trial.name}: train exited {code}: {last_error(trial)}")
    summary = json.loads(trial.summary_path.read_text())
    tune.report({"final_normalized": summary["final_normalized"], "summary": json.dumps(summary)})


def _tune_name(tune_trial) -> str:
    """Tune's name and directory for a trial: the sweep's trial name, not its whole config."""
    return Trial.from_json(tune_trial.config["trial"]).name


def _init_ray(address: str | None, workers: int) -> None:
    import logging

    import ray

    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
             "configure_logging": True}
    if address is None:  # a private Ray on this machine: loopback only, `workers` CPUs
        ray.init(num_cpus=workers, **quiet)
    else:
        ray.init(address=address, **quiet)


def run_ray(trials: list[Trial], address: str | None, workers: int, view: SweepView,
            storage: Path | None = None) -> Outcome:
    """Run every unfinished trial on Ray Tune (`address`, or a local Ray with `workers` CPUs); summaries come back.

    `storage`: Tune's own experiment directory (default RUNS_ROOT/_ray); the run directories are not in it.
    """
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no Tune tables; the sweep's view shows trials
    # Ctrl-C stops the sweep now, as locally (Tune's own handler would start a graceful end that keeps starting
    # trials): the KeyboardInterrupt leaves through fit(), ray.shutdown() ends the workers and with them, by
    # PR_SET_PDEATHSIG, every trial process; a rerun resumes them.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    if address is None:
        # A private single-node Ray: Ray's own single-node mode (read when ray is imported) takes 127.0.0.1 as the
        # node address, and Ray's servers then listen on loopback only; otherwise GCS, raylet and workers listen on
        # every interface (measured with `ss -ltnp`; tests/sweep checks it).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        from ray import tune
    except ImportError as exc:
        raise SpaarsError("--backend ray needs Ray: pip install 'spaars-robot[ray]' (Ray core and Tune)") from exc

    outcome = Outcome(skipped=[t.name for t in trials if t.status() is Status.done])
    pending = [t for t in trials if t.status() is not Status.done]
    if not pending:
        return outcome
    _init_ray(address, workers)
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        tuner = tune.Tuner(
            tune.with_resources(_trial_function, {"cpu": 1}),
            param_space={"trial": tune.grid_search([t.to_json() for t in pending]), "cwd": str(Path.cwd())},
            tune_config=tune.TuneConfig(max_concurrent_trials=len(pending), trial_name_creator=_tune_name,
                                        trial_dirname_creator=_tune_name),
            run_config=tune.RunConfig(
                name=f"sweep-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str((storage or pending[0].runs_root / "_ray").absolute()),
                failure_config=tune.FailureConfig(max_failures=MAX_FAILURES), verbose=0))
        results = _fit_while_viewing(tuner, pending, view)
    finally:
        signal.signal(signal.SIGTERM, previous)
        ray.shutdown()
    by_name = {t.name: t for t in pending}
    for result in results:
        name = Trial.from_json(result.config["trial"]).name
        trial = by_name[name]
        if result.error is not None or "summary" not in (result.metrics or {}):
            outcome.failed[name] = str(result.error).strip().splitlines()[-1] if result.error else "no result"
            continue
        if not trial.summary_path.exists():  # the trial ran where the driver's results directory is not
            trial.summary_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(trial.summary_path, json.loads(result.metrics["summary"]))
        outcome.finished.append(name)
    return outcome


def _fit_while_viewing(tuner, trials: list[Trial], view: SweepView):
    """`tuner.fit()` in this (main) thread, where Tune wants its signal handlers; the view redraws beside it.

    The view only reads files, so its thread never starts a process (trial processes come from Ray workers).
    """
    finished = threading.Event()

    def redraw() -> None:
        while not finished.wait(1.0):
            started = {t.name for t in trials if (t.run_dir / TRIAL_LOG).exists() and t.status() is not Status.done}
            view.update(started, set())

    drawer = threading.Thread(target=redraw, name="sweep-view", daemon=True)
    drawer.start()
    try:
        return tuner.fit()
    finally:
        finished.set()
        drawer.join()
        view.update(set(), set())
