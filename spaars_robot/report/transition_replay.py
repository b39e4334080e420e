"""Replaying a finished SPAARS run's transition checks under another transition rule, without training again.

The switch decision reads nothing but four logged numbers per evaluation (the evaluation return, RND novelty, the
raw policy's BC error and the gate's recent firing rate; `algos/transition.TransitionMonitor`), and nothing of the
latent phase depends on which rule is waiting to fire. So up to the run's own switch, its logged rows are exactly
the rows any other rule would have seen: feeding them to a monitor with other settings says where that rule would
have switched, as a fact of this run and not an estimate. Past the run's own switch the rows are the gated phase's
and say nothing about a longer latent phase; a rule that has not fired by then is reported as "not by step N".

A latent-only run (`--algo latent`) runs the same checks without acting on them, and its latent phase is SPAARS's
of the same seed up to SPAARS's switch, so its rows answer for any t_max up to the run's length; it has no decision
of its own to reproduce.

Every replay of a SPAARS run first feeds the run's own transition settings and must reproduce the logged decision (step and
reason, word for word); a run that does not (edited files, a change in the monitor's code) is refused rather than
replayed. That check is what makes the replay trustworthy enough to tune the rule on training seeds with.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from spaars_robot.algos.transition import TRANSITION_SIGNALS, TransitionMonitor
from spaars_robot.config.loading import format_validation_error
from spaars_robot.config.training import TransitionConfig, parse_set
from spaars_robot.errors import SpaarsError


@dataclass(frozen=True)
class CheckRow:
    """One evaluation's transition inputs, as the run logged them."""

    step: int
    phase: str
    return_mean: float
    novelty: float
    bc_error: float
    gate_rate_recent: float
    event: str


@dataclass(frozen=True)
class Decision:
    """Where a rule switched on these rows (None: not by `last_step`) and every check's reason on the way."""

    step: int | None
    reason: str
    last_step: int
    checks: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class RunReplay:
    """A run's own decision (reproduced from its rows; None for a latent-only run) and the candidate rule's."""

    source: Path
    seed: int
    own: Decision | None
    candidate: Decision
    candidate_config: TransitionConfig

    @property
    def fired_before_cap(self) -> bool:
        """The candidate switched on evidence, before its t_max forced it (what issue 16 counts)."""
        return self.candidate.step is not None and self.candidate.step < self.candidate_config.t_max


def _number(value: object, where: str, key: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SpaarsError(f"{where} has no number for {key!r} ({value!r}); not a SPAARS run's evaluation") from None
    if not math.isfinite(number):
        raise SpaarsError(f"{where}: {key!r} is {number}; the run's logged signals are damaged")
    return number


def _check_rows(records: list[dict], where: str) -> list[CheckRow]:
    """The evaluations of the latent phase and the one that switched (the rows a transition rule reads).

    The row of the switching evaluation is labelled with the phase after it (`gated`), but its signals were
    measured in the latent phase, before the switch, so it is the last row that can be replayed.
    """
    rows: list[CheckRow] = []
    for index, record in enumerate(records):
        at = f"{where}, evaluation {index}"
        if record.get("phase") not in ("latent", "gated"):
            raise SpaarsError(f"{at} has phase {record.get('phase')!r}; only SPAARS runs (latent, then gated) have "
                              "a transition to replay")
        rows.append(CheckRow(int(_number(record.get("step"), at, "step")), record["phase"],
                             *(_number(record.get(k), at, k) for k in TRANSITION_SIGNALS),
                             event=str(record.get("event") or "")))
        if record["phase"] != "latent":
            break
    if not rows:
        raise SpaarsError(f"{where}: no evaluation rows; the run has not evaluated yet")
    return rows


# The algorithms whose agent runs the TransitionMonitor's checks. A latent-only run logs them to the end: its latent
# phase is SPAARS's of the same seed, bit for bit up to SPAARS's switch (concurrent BC included; the raw policy never
# acts there), so its rows say where a rule would have switched with any t_max up to the run's length.
REPLAYABLE_ALGOS = ("spaars", "spaars-supe", "latent")


def _refuse_other_algos(algo: object, where: Path) -> None:
    if algo not in REPLAYABLE_ALGOS:
        raise SpaarsError(f"{where}: a {algo!r} run has no latent phase; only {', '.join(REPLAYABLE_ALGOS)} runs "
                          "log the transition checks a rule can be replayed on")


def _from_run_dir(run_dir: Path) -> tuple[str, TransitionConfig, int, list[CheckRow]]:
    """A run directory: its config.yaml's transition settings and its metrics.csv (every evaluation)."""
    path = run_dir / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text())
        algo, transition = config["algo"], config["online"]["transition"]
        transition, seed = TransitionConfig.model_validate(transition), int(config["seed"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, ValidationError) as exc:
        raise SpaarsError(f"{path}: cannot read the run's transition settings "
                          f"({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from exc
    _refuse_other_algos(algo, run_dir)
    metrics = run_dir / "metrics.csv"
    try:
        with open(metrics, newline="") as fh:
            records = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SpaarsError(f"{metrics}: cannot read the run's evaluations ({exc.__class__.__name__}: {exc})") from exc
    return algo, transition, seed, _check_rows(records, str(metrics))


def _from_summary(path: Path) -> tuple[str, TransitionConfig, int, list[CheckRow]]:
    """A compact summary: its transition settings (or, before they were written, the switch entry's thresholds,
    the same settings) and the curve's signals."""
    try:
        summary = json.loads(path.read_text())
        algo, seed, curve, switch = summary["algo"], int(summary["seed"]), summary["curve"], summary["switch"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise SpaarsError(f"{path}: not a run summary ({exc.__class__.__name__}: {exc})") from exc
    _refuse_other_algos(algo, path)
    settings = summary.get("transition") or (switch[0].get("thresholds") if switch else None)
    if settings is None or not all(k in row for row in curve[:1] for k in TRANSITION_SIGNALS):
        raise SpaarsError(f"{path}: this summary does not carry the transition settings and signals (written before "
                          "they were added); replay its run directory (metrics.csv) instead")
    try:
        transition = TransitionConfig.model_validate(settings)
    except (TypeError, ValidationError) as exc:
        raise SpaarsError(f"{path}: the summary's transition settings are not valid ({exc})") from exc
    records = [{**row, "event": switch[0]["reason"] if switch and row.get("step") == switch[0]["step"] else ""}
               for row in curve]
    return algo, transition, seed, _check_rows(records, str(path))


def load_checks(path: Path) -> tuple[str, TransitionConfig, int, list[CheckRow]]:
    """(algorithm, the run's own transition settings, its seed, its replayable rows) from a run directory or a
    summary."""
    return _from_summary(path) if path.is_file() else _from_run_dir(path)


def replay(rows: list[CheckRow], config: TransitionConfig) -> Decision:
    """Feed the rows to a fresh monitor with `config`, in order, until it switches or the rows end."""
    monitor = TransitionMonitor(config)
    checks: list[tuple[int, str]] = []
    for row in rows:
        switch, reason = monitor.update(row.step, row.return_mean, row.novelty, row.bc_error, row.gate_rate_recent)
        checks.append((row.step, reason))
        if switch:
            return Decision(row.step, reason, rows[-1].step, tuple(checks))
    return Decision(None, checks[-1][1], rows[-1].step, tuple(checks))


def with_overrides(config: TransitionConfig, overrides: dict[str, Any]) -> TransitionConfig:
    """`config` with fields replaced (values as `parse_sets` gives them), validated as the config file would be."""
    unknown = sorted(set(overrides) - set(TransitionConfig.model_fields))
    if unknown:
        raise SpaarsError(f"transition replay: unknown transition field(s) {', '.join(unknown)}; "
                          f"known: {', '.join(TransitionConfig.model_fields)}")
    try:
        return TransitionConfig.model_validate({**config.model_dump(), **overrides})
    except ValidationError as exc:
        raise SpaarsError(format_validation_error("transition replay --set", exc)) from None


def replay_run(source: Path, overrides: dict[str, Any]) -> RunReplay:
    """Check that the run's own rule reproduces its logged switch, then replay the candidate rule on its rows."""
    algo, own_config, seed, rows = load_checks(source)
    candidate_config = with_overrides(own_config, overrides)
    if algo == "latent":  # never switched: nothing of its own to reproduce, every row is the latent phase's
        return RunReplay(source, seed, None, replay(rows, candidate_config), candidate_config)
    own = replay(rows, own_config)
    logged = rows[-1].event if rows[-1].phase != "latent" else ""
    if own.step is not None and (own.step != rows[-1].step or own.reason != logged):
        raise SpaarsError(f"{source}: replaying the run's own transition settings does not reproduce its logged "
                          f"switch (replayed: step {own.step}, {own.reason!r}; logged: step {rows[-1].step}, "
                          f"{logged!r}); its rows cannot stand for what another rule would have seen")
    if own.step is None and rows[-1].phase != "latent":
        raise SpaarsError(f"{source}: the run switched at step {rows[-1].step} but its own settings, replayed, "
                          "do not switch there; its rows cannot stand for what another rule would have seen")
    return RunReplay(source, seed, own, replay(rows, candidate_config), candidate_config)


def parse_sets(items: list[str]) -> dict[str, Any]:
    """`field=value` pairs parsed as `train --set` parses them; its `online.transition.` prefix is accepted too."""
    return {key.removeprefix("online.transition."): value for key, value in map(parse_set, items)}


def describe(decision: Decision) -> str:
    if decision.step is None:
        return f"not by step {decision.last_step} ({decision.reason})"
    return f"step {decision.step}: {decision.reason}"


def as_json(result: RunReplay) -> dict:
    def one(d: Decision) -> dict:
        return {"step": d.step, "reason": d.reason, "replayed_up_to": d.last_step,
                "checks": [{"step": s, "reason": r} for s, r in d.checks]}

    return {"source": str(result.source), "seed": result.seed,
            "own": None if result.own is None else one(result.own),
            "candidate": {**one(result.candidate), "config": result.candidate_config.model_dump(mode="json")},
            "fired_before_t_max": result.fired_before_cap}
