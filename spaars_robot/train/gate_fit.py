"""`spaars-robot gate fit RUN`: supervise a deployable gate with branched simulator rollouts of a finished run.

After training, the run's final policies are fixed; what remains is deciding, per state, which of the two to
execute. This stage measures that decision's ground truth where it is cheap -- in the simulator the run trained in
(train/branching.py) -- on states of the deployed policy's own episodes, fits the rollout gate to it
(algos/rollout_gate.py), and then plays the run's evaluation episodes with four controllers on the same seeds: the
run's critic gate, the fitted gate, always raw and always latent, so the report says in returns, not only in sign
accuracy, whether the fitted gate beats both constant choices. Nothing trains: the policies and critic are the
checkpoint's, which the gate file is bound to (export/rollout_gate_file.py); `export --gate rollout` deploys it.

Rounds (`--rounds`, DAgger-style): a gate fitted on the states the critic gate visits is deployed on states it
did not see -- once it opens, raw actions take the robot where the latent controller never went, and on walker2d
that is where the one-round gate lost 50-70 points in closed loop (BENCHMARKS.md, "a gate supervised by the
simulator"). So round r + 1 plays round r's fitted gate, branches the states *it* visits (continuing, in both
branches, with that same gate's controller, so each label is the first action's value under the controller that
would follow it) and refits on every round's states together. The last round's gate is the one saved; every round's
fit and closed-loop score is recorded, none is chosen by its score.

Cost (walker2d, one core): ~12 min per round for 1,200 states x 4 repeats x 100 steps x 2 branches, plus 4 x
`episodes` evaluation episodes (and `episodes` more per extra round). Round r's branching episodes start from seeds
GATE_FIT_SEED_BASE + ROUND_SEED_STRIDE x r + i: never training, evaluation or the gate diagnostic's
(benchmarks/gate_accuracy.py, 3,000,000 + i), so the diagnostic can score this gate on states it was not fitted on.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import stats

from spaars_robot.algos.latch import Hold
from spaars_robot.algos.rollout_gate import (
    MARGINS,
    NEIGHBOURS,
    candidate_gate,
    fit_neighbour_gate,
    gate_features,
)
from spaars_robot.data.files import atomic_write_json
from spaars_robot.errors import SpaarsError
from spaars_robot.export.rollout_gate_file import GATE_FILE, save_rollout_gate
from spaars_robot.nn.neighbour_gate import NeighbourGate
from spaars_robot.train.branching import (
    branch_differences,
    collect_states,
    gate_inputs,
    load_gated_agent,
    paired_p_values,
)
from spaars_robot.train.runner import evaluate
from spaars_robot.train.safety_in_loop import env_factory

GATE_FIT_SEED_BASE = 5_000_000
ROUND_SEED_STRIDE = 100_000  # episodes per round can never reach it (states >= 1 per episode, far fewer states)
# `--select return`'s episodes: not training (seed x 1,000,003 + episode), evaluation (1,000,000 + i), the diagnostic's
# (3,000,000 + i) or the branching's (5,000,000 + 100,000 r + i); round r plays 7,500,000 + 100,000 r + i
SELECTION_SEED_BASE = 7_500_000
REPORT_FILE = "rollout_gate.json"
CONTROLLERS = ("critic_gate", "rollout_gate", "raw", "latent")


class GateFitSettings(BaseModel):
    """How much ground truth to buy, and how to judge it (defaults: what benchmarks/gate_learnability.py used)."""

    model_config = ConfigDict(extra="forbid")
    states: int = Field(1200, ge=10, description="states branched, every `stride` steps of deployed episodes")
    stride: int = Field(10, ge=1)
    repeats: int = Field(4, ge=2, description="paired repeats per state (significance is a paired t-test)")
    horizon: int = Field(100, ge=1, description="steps followed after the first action")
    lead_steps: int = Field(1, ge=1, description="steps each branch keeps its controller (raw or latent) before the "
                                                 "deployed policy takes over; 1: only the first action differs")
    hold_steps: int = Field(1, ge=1, description="the fitted gate decides every `hold_steps` steps of an episode and "
                                                 "holds its decision in between (= lead_steps: the decision the "
                                                 "branches measured is the one the gate executes)")
    noise: float = Field(0.1, ge=0.0, description="Gaussian action noise of the continuation (common to both)")
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="significance level of a state's difference")
    folds: int = Field(5, ge=2)
    neighbours: tuple[int, ...] = Field(NEIGHBOURS, min_length=1)
    margins: tuple[float, ...] = Field(MARGINS, min_length=1, description="decision margins, in sds of the differences")
    episodes: int = Field(20, ge=1, description="evaluation episodes per controller (the run's eval seeds)")
    threads: int = Field(1, ge=1)
    rounds: int = Field(1, ge=1, le=10, description="DAgger rounds: round r + 1 branches the states round r's gate "
                                                     "visits and refits on all rounds' states")
    select: Literal["gain", "return"] = Field(
        "gain", description="how the gate is chosen among the candidates: cross-validated per-state gain over "
                            "always-latent (gain), or the mean normalised return of each candidate played in closed "
                            "loop on episodes of its own seed stream (return)")
    selection_episodes: int = Field(10, ge=1, description="`select: return`: episodes per candidate")

    @model_validator(mode="after")
    def _lead_within_horizon(self) -> GateFitSettings:
        if self.lead_steps > self.horizon:
            raise ValueError(f"lead_steps {self.lead_steps} exceeds the horizon {self.horizon}: a branch would never "
                             f"reach the deployed policy")
        return self


def set_controller(agent, name: str, gate: NeighbourGate | None, hold_steps: int = 1) -> None:
    """Make the agent's deterministic `act` the named controller (a rollout gate holding each decision for
    `hold_steps` steps)."""
    agent.phase = "latent" if name == "latent" else "gated"
    agent.force_raw = name == "raw"
    agent.rollout_gate = gate if name == "rollout_gate" else None
    agent.rollout_hold = Hold(hold_steps)


def paired(a: list[float], b: list[float]) -> dict:
    """Mean and 95 % t-interval of per-episode differences a - b (same seeds: paired)."""
    d = np.asarray(a) - np.asarray(b)
    half = (float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
            if len(d) > 1 and d.std() > 0 else 0.0)
    return {"mean": float(d.mean()), "ci95": [float(d.mean() - half), float(d.mean() + half)]}


def compare_controllers(agent, task, config, gate: NeighbourGate, episodes: int, hold_steps: int = 1) -> dict:
    """The four controllers on the run's own evaluation seeds and env (its safety layer included)."""
    make = env_factory(config, task)
    scores = {}
    for name in CONTROLLERS:
        set_controller(agent, name, gate, hold_steps)
        record = evaluate(agent, task, episodes, config.eval.seed_base, make)
        scores[name] = {"normalized_mean": record["normalized_mean"], "normalized_std": record["normalized_std"],
                        "raw_rate": record["eval_raw_rate"],
                        "normalized": [task.normalized_score(r) for r in record["episode_returns"]]}
    rollout = scores["rollout_gate"]["normalized"]
    return {"episodes": episodes, "seed_base": config.eval.seed_base, "controllers": scores,
            "rollout_gate_minus": {name: paired(rollout, scores[name]["normalized"])
                                   for name in CONTROLLERS if name != "rollout_gate"}}


def select_by_return(agent, task, config, x: np.ndarray, y: np.ndarray, fit: dict, settings: GateFitSettings,
                     round_index: int, log: Callable[[str], None]) -> tuple[NeighbourGate, dict]:
    """Every candidate of the fit (both constants, each width x margin), fitted on all states and played in closed
    loop; the best mean normalised return is deployed.

    Why: the per-state gain is a one-step quantity under another controller's continuation; a gate that wins it can
    still compound locally-better raw actions into falls (walker2d seeds 2 and 4). Whole episodes measure what the
    issue asks for. Their seeds are the gate fit's own (SELECTION_SEED_BASE), never the evaluation's, so the
    report's evaluation of the chosen gate stays out of sample."""
    make = env_factory(config, task)
    seed_base = SELECTION_SEED_BASE + ROUND_SEED_STRIDE * round_index
    returns: dict[str, float] = {}
    for name in fit["cross_validated_gain"]:
        candidate, _ = candidate_gate(x, y, name)
        set_controller(agent, "rollout_gate", candidate, settings.hold_steps)
        returns[name] = evaluate(agent, task, settings.selection_episodes, seed_base, make)["normalized_mean"]
    choice = max(returns, key=returns.get)  # first on ties: constants before kernels
    gate, parameters = candidate_gate(x, y, choice)
    log(f"gate fit: round {round_index + 1}: by return {choice}: {returns[choice]:.1f} over "
        f"{settings.selection_episodes} selection episodes (always-latent {returns['always_latent']:.1f}, always-raw "
        f"{returns['always_raw']:.1f}; the gain's choice {fit['choice']} {returns[fit['choice']]:.1f})")
    return gate, fit | parameters | {"choice": choice, "gain_choice": fit["choice"], "selection_return": returns,
                                     "selection_seed_base": seed_base}


class RoundTruth(NamedTuple):
    """One round's branched states: gate features, mean difference, p-value, episode (unique across rounds)."""

    x: np.ndarray
    y: np.ndarray
    p_value: np.ndarray
    episode: np.ndarray


def measure_round(agent, nets, task, config, layer, settings: GateFitSettings, round_index: int,
                  log: Callable[[str], None], t0: float) -> RoundTruth:
    """Collect `settings.states` states under the agent's current controller and branch them with it."""
    offset = ROUND_SEED_STRIDE * round_index
    states = collect_states(agent, task, settings.states, settings.stride, layer, seed_base=GATE_FIT_SEED_BASE + offset)
    episodes = np.array([s.episode for s in states])
    if len(np.unique(episodes)) < settings.folds:  # before the costly branching: cross-validation keeps episodes whole
        raise SpaarsError(f"gate fit: {len(states)} states came from {len(np.unique(episodes))} episode(s), and "
                          f"cross-validation needs {settings.folds} whole episodes: raise --states or --stride")
    seen = gate_inputs(agent, nets, states, config.online.gate.kappa)
    step = max(1, settings.states // 10)

    def progress(done: int) -> None:
        if done % step == 0 or done == settings.states:
            log(f"gate fit: round {round_index + 1}: branched {done}/{settings.states} states "
                f"({time.perf_counter() - t0:.0f} s)")

    diffs = branch_differences(task, agent, states, seen.raw, seen.lat, settings.horizon, config.online.gamma,
                               settings.noise, settings.repeats, layer, on_state=progress,
                               lead_steps=settings.lead_steps)
    x = gate_features(seen.obs, seen.raw, seen.lat).numpy().astype(np.float64)
    return RoundTruth(x, diffs.mean(1), paired_p_values(diffs), episodes + offset)


def truth_summary(truth: RoundTruth, alpha: float) -> dict:
    significant = truth.p_value < alpha
    return {"states": len(truth.y), "episodes": len(np.unique(truth.episode)),
            "significant_states": int(significant.sum()),
            "raw_truly_better_share": float((truth.y[significant] > 0).mean()) if significant.any() else None,
            "mean_difference": float(truth.y.mean())}


@torch.no_grad()
def fit_gate(run_dir: Path, settings: GateFitSettings,
             log: Callable[[str], None] = print) -> dict:
    """Branch, fit (for each round), save `rollout_gate.pt`, compare the controllers, write `rollout_gate.json`."""
    torch.set_num_threads(settings.threads)
    t0 = time.perf_counter()
    config, task, agent, nets, layer = load_gated_agent(run_dir)
    truths: list[RoundTruth] = []
    rounds: list[dict] = []
    gate: NeighbourGate | None = None
    for r in range(settings.rounds):
        controller = "critic_gate" if gate is None else "rollout_gate"
        set_controller(agent, controller, gate, settings.hold_steps)
        played_by = "the deployed policy (critic gate)" if gate is None else f"round {r}'s fitted gate"
        log(f"gate fit {run_dir}: round {r + 1}/{settings.rounds}: collecting {settings.states} states of {played_by}")
        truths.append(measure_round(agent, nets, task, config, layer, settings, r, log, t0))
        x, y, p_values, episodes = (np.concatenate(column) for column in zip(*truths, strict=True))
        significant = p_values < settings.alpha
        gate, fit = fit_neighbour_gate(x, y, significant, episodes, settings.folds, settings.neighbours,
                                       settings.margins)
        gains = fit["cross_validated_gain"]
        log(f"gate fit: round {r + 1}: by gain {fit['choice']} on {len(y)} states: cross-validated gain "
            f"{gains[fit['choice']]:+.3f} per state over always-latent (always-raw {gains['always_raw']:+.3f}, "
            f"{int(significant.sum())} significant)")
        if settings.select == "return":
            gate, fit = select_by_return(agent, task, config, x, y, fit, settings, r, log)
        round_record = {"round": r + 1, "collected_under": controller, **truth_summary(truths[-1], settings.alpha),
                        "choice": fit["choice"], "cross_validated_gain": gains,
                        **({"gain_choice": fit["gain_choice"], "selection_return": fit["selection_return"]}
                           if settings.select == "return" else {})}
        if settings.rounds > 1:  # how each round's gate plays; recorded, never used to choose a round
            set_controller(agent, "rollout_gate", gate, settings.hold_steps)
            played = evaluate(agent, task, settings.episodes, config.eval.seed_base, env_factory(config, task))
            round_record |= {"normalized_mean": played["normalized_mean"], "raw_rate": played["eval_raw_rate"]}
            log(f"gate fit: round {r + 1}'s gate scores {played['normalized_mean']:.1f} over {settings.episodes} "
                f"evaluation episodes, raw on {played['eval_raw_rate']:.0%} of steps")
        rounds.append(round_record)
    branched = time.perf_counter() - t0  # "branch" in the report: everything up to the saved gate (with rounds and
    # `select: return`, also the selection episodes and each round's evaluation), so a report's cost stays comparable
    record = {"settings": settings.model_dump(mode="json"), "seed_base": GATE_FIT_SEED_BASE,
              **truth_summary(RoundTruth(x, y, p_values, episodes), settings.alpha),
              "fitted_raw_rate": float((gate(torch.as_tensor(x, dtype=torch.float32)) > 0).float().mean()), **fit,
              "rounds": rounds,
              # the measured truth itself, so another selection rule can be tried on it without new rollouts
              "per_state": {"difference": y.round(6).tolist(), "p_value": p_values.round(6).tolist(),
                            "episode": episodes.tolist(),
                            "round": np.concatenate([np.full(len(t.y), i + 1) for i, t in enumerate(truths)]).tolist()}}
    save_rollout_gate(run_dir, gate, record)
    log(f"gate fit: saved round {settings.rounds}'s gate ({fit['choice']}) to {run_dir / GATE_FILE}")
    comparison = compare_controllers(agent, task, config, gate, settings.episodes, settings.hold_steps)
    report = {"run": str(run_dir), "task": task.name, "algo": config.algo, "seed": config.seed,
              "tag": config.tag, "fit": record, "evaluation": comparison,
              "seconds": {"branch": round(branched, 1), "total": round(time.perf_counter() - t0, 1)}}
    atomic_write_json(run_dir / REPORT_FILE, report)
    scores = comparison["controllers"]
    log("gate fit: normalised score over " + f"{settings.episodes} episodes: " +
        ", ".join(f"{name} {scores[name]['normalized_mean']:.1f}" for name in CONTROLLERS) +
        f"; wrote {run_dir / REPORT_FILE}")
    return report
