"""The simulated robot: a MuJoCo env stepped at the task's control rate, its actions coming from the server.

This is the sim-to-sim test of an exported bundle, and the reference controller loop. Scheduling is
drift-free: tick k is due at t0 + k * period (absolute deadlines, like unitree's C++ `sleep_until`),
so compute time never accumulates into the period; a tick that starts late is skipped, not squeezed.
Each request's deadline is the end of its tick. What is applied is decided by the client watchdog
(`safety/watchdog.py`, via `ControlLoop`): a fresh reply, else hold, damp, or safe stop; a reply
older than the deadline is never applied, and recovery from damp/safe stop needs a fresh handshake.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
from pydantic import BaseModel

from spaars_robot.config.tasks import TaskSpec
from spaars_robot.envs.make import make_env
from spaars_robot.export.manifest import BundleManifest
from spaars_robot.runtime import protocol as p
from spaars_robot.runtime.client import ServerUnavailable
from spaars_robot.runtime.decision import DecisionState
from spaars_robot.safety.limits import LIMIT_KINDS, SafetyLayer
from spaars_robot.safety.spec import WatchdogSpec
from spaars_robot.safety.watchdog import Watchdog, WatchdogState

if TYPE_CHECKING:
    import torch

SPIN_S = 0.00005  # sleep() wakes ~50-100 us late; only the last 50 us of a wait are spun
log = logging.getLogger("spaars_robot.runtime.sim_client")


class Controller(Protocol):
    """What the control loop needs from a policy: `Client` over ZeroMQ, or `InProcessPolicy`."""

    handshakes: int

    def connect(self, timeout_s: float = ...) -> object: ...
    def reset(self, timeout_s: float | None = None) -> None: ...
    def forget_session(self) -> None: ...
    def act(self, obs: np.ndarray, timeout_s: float | None = None,
            watchdog: p.WatchdogReport | None = None, outcome: p.Outcome | None = None) -> p.ActionReply: ...


class EpisodeResult(BaseModel):
    seed: int
    steps: int
    episode_return: float
    normalized_score: float
    deadline_misses: int  # control periods of this episode without a fresh reply (the watchdog's count)
    late_ticks: int = 0  # ticks of this episode the pacer woke up for after their period had ended
    sources: dict[str, int]


class TransitionLog(BaseModel):
    t_s: float  # seconds since the loop started
    previous: str
    state: str
    reason: str


class SimSummary(BaseModel):
    task: str
    episodes: list[EpisodeResult]
    mean_return: float
    mean_normalized_score: float
    deadline_misses: int  # control periods without a fresh reply (watchdog count)
    late_ticks: int  # ticks skipped because the loop itself started late
    steps: int
    source_share: dict[str, float]  # raw / latent / fallback / hold, fraction of all applied steps
    fallbacks: int
    limit_counts: dict[str, int]  # safety limits that acted on applied actions, by kind
    watchdog_transitions: list[TransitionLog]
    stale_replies: int  # replies that arrived too late and were not applied
    max_applied_age_ms: float  # oldest reply ever applied; never above the deadline
    rtt_p50_us: float
    rtt_p99_us: float


def task_schema(task: TaskSpec, obs_names: list[str] | None = None, action_names: list[str] | None = None) -> p.Schema:
    """The schema a controller for `task` announces; names default to the task's, as export writes them."""
    task_obs_names, task_action_names = task.names()
    return p.Schema(task=task.name, obs_names=tuple(obs_names or task_obs_names),
                    action_names=tuple(action_names or task_action_names), control_rate_hz=task.control_rate_hz)


def sleep_until(due: float) -> None:
    """Sleep to `due` (perf_counter time) with a short final spin: cheap on a loaded CPU, yet punctual."""
    while (remaining := due - time.perf_counter()) > SPIN_S:
        time.sleep(remaining - SPIN_S)
    while time.perf_counter() < due:
        pass


@dataclass
class Pacer:
    """Absolute-deadline ticks: tick k is due at t0 + k * period; a late tick is skipped, not squeezed."""

    period: float
    t0: float = field(default_factory=time.perf_counter)
    k: int = 0
    late: int = 0  # ticks skipped because the loop was already past them

    def wait_next(self) -> float:
        """Sleep until the next due tick; returns that tick's deadline (its end)."""
        self.k += 1
        due = self.t0 + self.k * self.period
        now = time.perf_counter()
        if now > due:
            missed = int((now - due) // self.period) + 1
            self.late += missed
            self.k += missed
            due = self.t0 + self.k * self.period
        sleep_until(due)
        return due + self.period


@dataclass(frozen=True)
class Tick:
    """One control period: what was applied, the watchdog state that chose it, and the reply behind it."""

    action: np.ndarray
    state: WatchdogState
    fresh: bool  # a reply from this period, within the deadline, was applied
    source: str  # the reply's source when fresh, else "hold" (the watchdog's action)
    reply_age_s: float | None
    limits: tuple[str, ...]
    reply: p.ActionReply | None


class ControlLoop:
    """The controller's per-period logic: ask the server within the period, let the watchdog decide.

    On entering DAMP or SAFE_STOP the client's session is dropped, so the next successful request
    starts with a fresh handshake (a new server session with a fresh rate-limit history), and that
    handshake is what lets the watchdog recover. Every request carries the watchdog's state so the
    server's telemetry shows the robot side too.
    """

    def __init__(self, client: Controller, spec: WatchdogSpec, period_s: float, action_dim: int,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.client = client
        self.clock = clock
        self.watchdog = Watchdog(spec, period_s, action_dim, clock)
        self.sources = dict.fromkeys(p.SOURCES, 0)
        self.limit_counts = dict.fromkeys(LIMIT_KINDS, 0)
        self.states = {state.value: 0 for state in WatchdogState}
        self.server_errors = 0
        self.max_applied_age_s = 0.0
        self.rtts_us: list[float] = []
        self.t0 = clock()
        self._handshakes_seen = 0
        self._session_dropped = False
        self._latent: np.ndarray | None = None  # last in-support (latent/fallback) action, for hold_source: latent

    def tick(self, obs: np.ndarray, budget_s: float | None, outcome: p.Outcome | None = None) -> Tick:
        """One period: request with `budget_s` (None: the client's own timeout), then let the watchdog choose.

        `outcome` (reward and termination of the step into `obs`) travels with the request for the server's
        recording; it does not change what is applied.
        """
        wd = self.watchdog
        if wd.state in (WatchdogState.DAMP, WatchdogState.SAFE_STOP) and not self._session_dropped:
            self.client.forget_session()
            self._session_dropped = True
        reply = None
        sent_at, t_send = self.clock(), time.perf_counter()
        try:
            reply = self.client.act(obs, timeout_s=budget_s,
                                    watchdog=p.WatchdogReport(wd.state.value, wd.deadline_misses,
                                                              ticks=sum(self.sources.values()),
                                                              held=self.sources["hold"]),
                                    outcome=outcome)
            self.rtts_us.append((time.perf_counter() - t_send) * 1e6)
        except ServerUnavailable:
            pass
        except p.ServerError as exc:  # refused this request (e.g. unsafe_action): nothing fresh to apply
            if isinstance(exc, p.HandshakeRefused):
                raise
            self.server_errors += 1
            log.warning("server error: %s", exc)
        if self.client.handshakes != self._handshakes_seen:
            self._handshakes_seen = self.client.handshakes
            self._session_dropped = False
            wd.handshake_ok()
        cmd = wd.step(None if reply is None else reply.action, None if reply is None else sent_at, self._latent)
        self.states[cmd.state.value] += 1
        if cmd.fresh and reply is not None:
            source, limits = reply.source, reply.limits
            self.max_applied_age_s = max(self.max_applied_age_s, cmd.reply_age_s or 0.0)
            for kind in limits:
                if kind in self.limit_counts:
                    self.limit_counts[kind] += 1
            if source in ("latent", "fallback"):
                self._latent = np.array(reply.action, dtype=np.float64)
        else:
            source, limits = "hold", ()
        self.sources[source] += 1
        return Tick(cmd.action, cmd.state, cmd.fresh, source, cmd.reply_age_s, limits, reply)

    def transitions(self) -> list[TransitionLog]:
        return [TransitionLog(t_s=t.time - self.t0, previous=t.previous.value, state=t.state.value, reason=t.reason)
                for t in self.watchdog.transitions]


def run_sim(client: Controller, task: TaskSpec, episodes: int = 1, seed: int = 0, *, realtime: bool = True,
            max_steps: int | None = None, timeout_s: float | None = None,
            watchdog: WatchdogSpec | None = None) -> SimSummary:
    """Play `episodes` episodes of `task` through `client`; seeds are seed, seed+1, ...

    realtime=False steps as fast as replies come (no pacing, deadline = timeout_s or the client's), for tests
    and for the sim-to-sim score comparison, which does not depend on wall-clock time: the watchdog then
    runs on simulated time (one period per step), so a slow machine does not change what is applied.
    `watchdog` defaults to the timings of `safety/<task>.yaml`.
    """
    if watchdog is None:
        from spaars_robot.safety.spec import load_safety_spec

        watchdog = load_safety_spec(task.name).watchdog
    env = make_env(task)
    period = 1.0 / task.control_rate_hz
    client.connect()
    sim_time = [0.0]
    clock = time.perf_counter if realtime else (lambda: sim_time[0])
    loop = ControlLoop(client, watchdog, period, task.action_dim, clock=clock)
    results: list[EpisodeResult] = []
    late_ticks = 0
    try:
        for episode in range(episodes):
            ep_seed = seed + episode
            obs, _ = env.reset(seed=ep_seed)
            try:
                client.reset(timeout_s=max(period, 0.5))
            except (ServerUnavailable, p.ServerError) as exc:
                log.warning("episode reset not acknowledged (%s); the watchdog decides what is applied", exc)
            sources_before, misses_before = dict(loop.sources), loop.watchdog.deadline_misses
            total, steps = 0.0, 0
            pacer = Pacer(period)
            deadline = pacer.t0 + period
            outcome = None  # the first observation of an episode has no step behind it
            while True:
                # Fast mode: the given timeout, else the client's own (None), never the wall-clock period.
                budget = max(deadline - time.perf_counter(), 0.0) if realtime else timeout_s
                tick = loop.tick(obs.astype(np.float32), budget, outcome)
                applied = tick.action.astype(np.float32)
                obs, reward, terminated, truncated, _ = env.step(applied)
                total += float(reward)
                steps += 1
                truncated = truncated or (max_steps is not None and steps >= max_steps)
                outcome = p.Outcome(step=steps, reward=float(reward), terminated=bool(terminated),
                                    truncated=bool(truncated), applied=applied)
                if terminated or truncated:
                    report_episode_end(client, obs.astype(np.float32), outcome, max(period, 0.05))
                    break
                if realtime:
                    deadline = pacer.wait_next()
                else:
                    sim_time[0] += period
            late_ticks += pacer.late
            results.append(EpisodeResult(
                seed=ep_seed, steps=steps, episode_return=total, normalized_score=task.normalized_score(total),
                deadline_misses=loop.watchdog.deadline_misses - misses_before, late_ticks=pacer.late,
                sources={s: loop.sources[s] - sources_before[s] for s in p.SOURCES}))
    finally:
        env.close()
    all_steps = sum(r.steps for r in results)
    share = {s: sum(r.sources[s] for r in results) / max(all_steps, 1) for s in p.SOURCES}
    rtt = np.asarray(loop.rtts_us) if loop.rtts_us else np.zeros(1)
    stale = loop.watchdog.stale_replies + getattr(client, "stale_replies", 0)
    return SimSummary(task=task.name, episodes=results,
                      mean_return=float(np.mean([r.episode_return for r in results])),
                      mean_normalized_score=float(np.mean([r.normalized_score for r in results])),
                      deadline_misses=loop.watchdog.deadline_misses, late_ticks=late_ticks, steps=all_steps,
                      source_share=share, fallbacks=sum(r.sources["fallback"] for r in results),
                      limit_counts=loop.limit_counts, watchdog_transitions=loop.transitions(),
                      stale_replies=stale, max_applied_age_ms=loop.max_applied_age_s * 1e3,
                      rtt_p50_us=float(np.percentile(rtt, 50)), rtt_p99_us=float(np.percentile(rtt, 99)))


def report_episode_end(client: Controller, final_obs: np.ndarray, outcome: p.Outcome, timeout_s: float) -> None:
    """Send the observation that ends an episode with its outcome, so a recording holds the last transition.

    Its reply is not applied (there is no next step), and a missed reply only costs the recording that
    transition: the importer then drops it, as D4RL's qlearning_dataset drops a step without a successor.
    """
    try:
        client.act(final_obs, timeout_s=timeout_s, outcome=outcome)
    except (ServerUnavailable, p.ServerError) as exc:
        log.warning("end of episode not reported (%s); its last transition is not recorded", exc)


class InProcessPolicy:
    """The torch PolicyStack with the server's decision rule, behind the Client interface `run_sim` uses.

    Running `run_sim` with this and with a Client on the exported bundle (same seeds) is the sim-to-sim
    check: the two must agree within noise, or the export/serving path changed the policy.
    """

    def __init__(self, stack: torch.nn.Module, manifest: BundleManifest, safety: SafetyLayer | None = None) -> None:
        self.stack = stack.eval()
        self.safety = safety
        self._safety_state = None if safety is None else safety.new_state()
        m = manifest
        self.state = DecisionState.for_bundle(m)
        self._seq = 0
        self.handshakes = 0

    def connect(self, timeout_s: float = 1.0) -> None:
        """Nothing to connect to; counts as the handshake so the watchdog starts alike for both controllers."""
        self.handshakes += 1

    def forget_session(self) -> None:
        """An in-process policy cannot lose its link; a new 'session' starts from fresh latches and history."""
        self.state.reset()
        self._safety_state = None if self.safety is None else self.safety.new_state()
        self.handshakes += 1

    def reset(self, timeout_s: float | None = None) -> None:
        self.state.reset()

    def act(self, obs: np.ndarray, timeout_s: float | None = None,
            watchdog: p.WatchdogReport | None = None, outcome: p.Outcome | None = None) -> p.ActionReply:
        # torch: the in-process reference only; the serving path never imports it
        from spaars_robot.export.stack import stack_outputs

        raw, latent, advantage, score = stack_outputs(self.stack, obs, self.state.skill)
        decision = self.state.decide(advantage, score)
        action = raw if decision.source == "raw" else latent
        limits: tuple[str, ...] = ()
        source = decision.source
        if self.safety is not None:
            result = self.safety.apply(action, self._safety_state, obs)
            action, limits = result.action, result.limits
            source = "hold" if result.held else source  # as the server reports a hold by the safety spec
        self._seq += 1
        return p.ActionReply(seq=self._seq, action=np.asarray(action, dtype=np.float32), source=source,
                             gate_advantage=decision.gate_advantage, support_score=decision.support_score,
                             fallbacks=self.state.fallbacks, infer_us=0.0, server_us=0.0, limits=limits)
