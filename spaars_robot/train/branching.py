"""Ground truth for a gate by branching the simulator: which first action, raw or latent, really does better here?

From MuJoCo states saved along episodes of a run's deployed policy, each state is branched twice -- execute the raw
controller's action or the decoded latent action, then follow the same deployed policy for H steps with Gaussian
action noise drawn from the same generator in both branches (common random numbers) -- for several repeats. The
paired difference of discounted H-step returns is the true advantage of raw over latent at that state, with no
critic bootstrap, so it never depends on the critic a gate is judged by or fitted beside.

Two users: `benchmarks/gate_accuracy.py` scores a run's gate against it, and `spaars-robot gate fit`
(train/gate_fit.py) supervises a deployable gate with it. Both need the same states, the same actions and the same
safety layer as the deployed policy, hence one place.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from scipy import stats

from spaars_robot.algos.gate import lcb_of, member_advantages
from spaars_robot.config.tasks import load_task
from spaars_robot.config.training import load_run_config
from spaars_robot.envs import make_env
from spaars_robot.errors import SpaarsError
from spaars_robot.safety.limits import SafetyLayer
from spaars_robot.safety.spec import load_safety_spec
from spaars_robot.train.agents import agent_from_checkpoint
from spaars_robot.train.runner import load_checkpoint

GATED_ALGOS = ("spaars", "latent", "raw")  # SPAARSAgent: a raw controller, a latent one, and a gate between them


def load_gated_agent(run_dir: Path):
    """A SPAARS-family run's final agent in its gated phase (so its gate decides even if the run never switched),
    rebuilt from the checkpoint alone, and the run's safety layer (a run trained under a spec is judged as it runs:
    every executed action through it). On the CPU whatever device the run trained on: one state at a time.
    Returns (config, task, agent, nets, layer or None)."""
    config, _ = load_run_config(run_dir)
    config = config.model_copy(update={"device": "cpu"})
    checkpoint = run_dir / "checkpoint.pt"
    if not checkpoint.exists():
        raise SpaarsError(f"{run_dir}: no checkpoint.pt yet")
    if config.algo not in GATED_ALGOS:
        raise SpaarsError(f"{run_dir}: a {config.algo} run has no raw/latent gate ({', '.join(GATED_ALGOS)} runs do)")
    task = load_task(config.task)
    agent, nets = agent_from_checkpoint(config, task, load_checkpoint(checkpoint)["agent"])
    agent.phase, agent.force_raw = "gated", False
    layer = None if config.safety_spec is None else SafetyLayer(load_safety_spec(Path(config.safety_spec)),
                                                                 task.action_dim, task.obs_dim)
    return config, task, agent, nets, layer


def applied(layer: SafetyLayer | None, state, action: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """What the env receives: the run's safety layer applied (trained under a spec), else the env's clip."""
    return np.clip(action, -1.0, 1.0) if layer is None else layer.apply(action, state, obs).action


class SavedState(NamedTuple):
    qpos: np.ndarray
    qvel: np.ndarray
    obs: np.ndarray
    safety: object  # the safety layer's state (rate-limit history), None without a layer
    deployed_raw: bool  # the deployed policy executed the raw action here
    episode: int  # which collected episode: states of one episode are correlated, so held-out splits keep them whole
    # the deployed latches after this state's decision, which branches continue from: the critic gate's (None: reset,
    # as branches did before 2026-12-06) and the support monitor's (`online.support_monitor`). With the monitor the
    # gate can be open where the executed action was the latent fallback, so deployed_raw cannot stand in for it
    gate_latch: bool | None = None
    support_latch: bool = False


def collect_states(agent, task, count: int, stride: int, layer: SafetyLayer | None, *,
                   seed_base: int) -> list[SavedState]:
    """A state every `stride` steps along episodes of the deployed policy, with the deployed gate's decision there.

    The decision is kept because the gate's entry test at a state (LCB > tau x scale, scored as `sign_accuracy`)
    is not what it executes once its latch is open: it then stays raw while LCB > (tau - hysteresis) x scale, and
    with the default `scale: q` that band is far wider than the advantages, so a gate that rarely passes its entry
    test can still execute raw on most steps. `seed_base`: the episodes' reset seeds, a stream per user (never the
    evaluation's), so states that score a gate are never the states that fitted one."""
    env = make_env(task)
    states, episode = [], 0
    while len(states) < count:
        obs, _ = env.reset(seed=seed_base + episode)
        safety = None if layer is None else layer.new_state()
        agent.begin_episode(evaluation=True)
        done, t = False, 0
        while not done and len(states) < count:
            saved = t % stride == 0
            if saved:
                data = env.unwrapped.data
                qpos, qvel, kept_obs, kept_safety = (data.qpos.copy(), data.qvel.copy(),
                                                     np.asarray(obs, dtype=np.float64).copy(), copy.deepcopy(safety))
            action, source = agent.act(obs)
            if saved:
                states.append(SavedState(qpos, qvel, kept_obs, kept_safety, source == "raw", episode,
                                         agent.eval_gate.is_open, agent.eval_support_latch.on))
            obs, _, terminated, truncated, _ = env.step(applied(layer, safety, action, obs))
            done, t = terminated or truncated, t + 1
        episode += 1
    env.close()
    return states


def branch_return(env, agent, qpos, qvel, first_action: np.ndarray, horizon: int, gamma: float, noise: float,
                  seed: int, layer: SafetyLayer | None = None, safety=None, obs: np.ndarray | None = None,
                  lead: str | None = None, lead_steps: int = 1, gate_open: bool | None = None,
                  support_on: bool = False) -> float:
    """Discounted return of `first_action`, then (with `lead`) that controller for the rest of the first
    `lead_steps` steps, then the deployed policy, with seeded noise after the first action, from (qpos, qvel).

    Under a safety layer both branches continue from a copy of the same saved layer state (rate-limit history).
    `horizon` counts every step from the state, lead steps included, so a longer lead costs nothing more.
    `gate_open`, `support_on`: the deployed critic gate's and support monitor's latches (SavedState). The continuation is the
    deployed policy, latch included: a latch reset at every branch would make it re-pass the gate's entry test,
    which a latching gate rarely does, so the branches would measure a mostly-latent continuation instead (done so
    before 2026-12-06). During a lead the latch keeps observing, as the deployed one would.
    """
    env.unwrapped.set_state(qpos, qvel)
    agent.begin_episode(evaluation=True)
    if gate_open is not None:
        agent.eval_gate.is_open = gate_open
    agent.eval_support_latch.on = support_on
    generator = np.random.default_rng(seed)
    safety = copy.deepcopy(safety)
    total, action = 0.0, first_action
    for t in range(horizon):
        obs, reward, terminated, _, _ = env.unwrapped.step(applied(layer, safety, action, obs))
        total += gamma ** t * float(reward)
        if terminated:
            break
        if lead is not None and t + 1 < lead_steps:
            if agent.rollout_gate is None:
                agent.act(obs)  # the critic gate's latch observes the step (deterministic, no random numbers)
            action = agent.controller_action(obs, lead)
        else:
            action, _ = agent.act(obs)
        action = action + noise * generator.standard_normal(action.shape)
    return total


def branch_differences(task, agent, states: list[SavedState], raw: torch.Tensor, lat: torch.Tensor, horizon: int,
                       gamma: float, noise: float, repeats: int, layer: SafetyLayer | None,
                       on_state: Callable[[int], None] | None = None, lead_steps: int = 1) -> np.ndarray:
    """[states, repeats] paired differences of discounted H-step returns, raw first action minus latent first action
    (with `lead_steps` > 1: the raw controller for the first `lead_steps` steps minus the latent controller for them).

    Why a lead: one swapped action among a hundred moves the return by little, so at most states the difference
    drowns in the continuation's noise, and a decision the gate repeats step after step -- the start of an episode,
    where seed 0's critic gate kept latent for 8 steps and scored 36 points above always-raw (BENCHMARKS.md) -- is
    never measured as one. Repeat r of state i seeds both branches' noise with 7919 i + r (common random numbers),
    so a state's difference is the branch controllers' doing, and a rerun gives the same numbers. `on_state(done)` is
    called after each state."""
    env = make_env(task)
    diffs = np.zeros((len(states), repeats))
    for i, state in enumerate(states):
        for r in range(repeats):
            seed = 7919 * i + r
            returns = [branch_return(env, agent, state.qpos, state.qvel, first[i].numpy(), horizon, gamma, noise, seed,
                                     layer, state.safety, state.obs, lead=name if lead_steps > 1 else None,
                                     lead_steps=lead_steps, gate_open=state.gate_latch,
                                     support_on=state.support_latch)
                       for first, name in ((raw, "raw"), (lat, "latent"))]
            diffs[i, r] = returns[0] - returns[1]
        if on_state is not None:
            on_state(i + 1)
    env.close()
    return diffs


def paired_p_values(diffs: np.ndarray) -> np.ndarray:
    """Two-sided p of a paired t-test per state (rows: states, columns: repeats); 1 where undefined."""
    repeats = diffs.shape[1]
    if repeats < 2:
        return np.ones(diffs.shape[0])
    mean, sd = diffs.mean(1), diffs.std(1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(sd > 0, mean / (sd / math.sqrt(repeats)), np.where(mean != 0, np.inf, 0.0))
    return 2 * stats.t.sf(np.abs(t), df=repeats - 1)


class GateInputs(NamedTuple):
    obs: torch.Tensor  # normalised observations of the saved states
    raw: torch.Tensor  # mu_raw(s)
    lat: torch.Tensor  # D(s, mean z(s))
    advantage: torch.Tensor  # [E, N] member advantages of raw over latent, from the critic the gate reads
    lcb: torch.Tensor  # [N] what the gate compares with its thresholds
    deployed: np.ndarray  # [N] what the deployed gate executed at each state (raw: True)


def gate_inputs(agent, nets, states: list[SavedState], kappa: float) -> GateInputs:
    """What the gate saw at each saved state: the diagnostic and `--add-deployed` read the same.

    The raw action is the agent's raw controller, not `nets.raw_policy`: with `online.raw_init=spar` the agent
    executes SPAR's rectified policy and the pretraining's AWR policy is never deployed (results on such runs
    written before 2026-12-05 03:50 UTC branched and scored the AWR policy's action; see BENCHMARKS.md)."""
    obs = nets.normalizer(torch.as_tensor(np.stack([s.obs for s in states]), dtype=torch.float32))
    raw, lat = agent.raw_policy.mean_action(obs), nets.decoded_latent_mean(obs)
    advantage = member_advantages(agent.gate_critic, obs, raw, lat)
    return GateInputs(obs, raw, lat, advantage, lcb_of(advantage, kappa), np.array([s.deployed_raw for s in states]))
