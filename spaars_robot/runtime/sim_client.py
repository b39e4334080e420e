"""The simulated robot: a MuJoCo env stepped at the task's control rate, its actions coming from the server.

This is the sim-to-sim test of an exported bundle. Scheduling is drift-free: tick k is due at
t0 + k * period (absolute deadlines, like unitree's C++ `sleep_until`), so compute time never
accumulates into the period. Each request's deadline is the end of its tick; a missed reply or an
overrun tick is counted, and the previous action is held (source `hold`), as a real controller would.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import BaseModel

from spaars_robot.config.tasks import TaskSpec
from spaars_robot.envs.make import make_env
from spaars_robot.export.manifest import BundleManifest
from spaars_robot.runtime import protocol as p
from spaars_robot.runtime.client import Client, ServerUnavailable
from spaars_robot.runtime.decision import DecisionState

SPIN_S = 0.0003  # sleep() overshoots by ~0.1 ms; spin the last part of each wait


class EpisodeResult(BaseModel):
    seed: int
    steps: int
    episode_return: float
    normalized_score: float
    deadline_misses: int
    sources: dict[str, int]


class SimSummary(BaseModel):
    task: str
    episodes: list[EpisodeResult]
    mean_return: float
    mean_normalized_score: float
    deadline_misses: int  # replies not received in time + ticks that started late
    steps: int
    source_share: dict[str, float]  # raw / latent / fallback / hold, fraction of all steps
    fallbacks: int
    rtt_p50_us: float
    rtt_p99_us: float


def task_schema(task: TaskSpec, obs_names: list[str] | None = None, action_names: list[str] | None = None) -> p.Schema:
    """The schema a controller for `task` announces; names default to the export's generic ones."""
    return p.Schema(task=task.name,
                    obs_names=tuple(obs_names or [f"obs_{i}" for i in range(task.obs_dim)]),
                    action_names=tuple(action_names or [f"action_{i}" for i in range(task.action_dim)]),
                    control_rate_hz=task.control_rate_hz)


@dataclass
class _Pacer:
    """Absolute-deadline ticks: tick k is due at t0 + k * period; a late tick is skipped, not squeezed."""

    period: float
    t0: float = field(default_factory=time.perf_counter)
    k: int = 0
    late: int = 0

    def wait_next(self) -> float:
        """Sleep until the next due tick; returns that tick's deadline (its end)."""
        self.k += 1
        due = self.t0 + self.k * self.period
        now = time.perf_counter()
        if now > due:
            missed = int((now - due) // self.period) + 1
            self.late += 1
            self.k += missed
            due = self.t0 + self.k * self.period
        while (remaining := due - time.perf_counter()) > SPIN_S:
            time.sleep(remaining - SPIN_S)
        while time.perf_counter() < due:
            pass
        return due + self.period


def run_sim(client: Client | InProcessPolicy, task: TaskSpec, episodes: int = 1, seed: int = 0, *, realtime: bool = True,
            max_steps: int | None = None, timeout_s: float | None = None) -> SimSummary:
    """Play `episodes` episodes of `task` through `client`; seeds are seed, seed+1, ...

    realtime=False steps as fast as replies come (no pacing, deadline = timeout_s or one period), for tests
    and for the sim-to-sim score comparison, which does not depend on wall-clock time.
    """
    env = make_env(task)
    period = 1.0 / task.control_rate_hz
    client.connect()
    results: list[EpisodeResult] = []
    rtts: list[float] = []
    try:
        for episode in range(episodes):
            ep_seed = seed + episode
            obs, _ = env.reset(seed=ep_seed)
            client.reset(timeout_s=max(period, 0.5))
            sources = dict.fromkeys(p.SOURCES, 0)
            action = np.zeros(task.action_dim, dtype=np.float32)
            total, steps, misses = 0.0, 0, 0
            pacer = _Pacer(period)
            deadline = pacer.t0 + period
            while True:
                t_send = time.perf_counter()
                budget = max(deadline - t_send, 0.0) if realtime else (timeout_s or period)
                try:
                    reply = client.act(obs.astype(np.float32), timeout_s=budget)
                    rtts.append((time.perf_counter() - t_send) * 1e6)
                    action = reply.action
                    sources[reply.source] += 1
                except ServerUnavailable:
                    misses += 1
                    sources["hold"] += 1
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                steps += 1
                if terminated or truncated or (max_steps is not None and steps >= max_steps):
                    break
                if realtime:
                    late_before = pacer.late
                    deadline = pacer.wait_next()
                    misses += pacer.late - late_before
            results.append(EpisodeResult(seed=ep_seed, steps=steps, episode_return=total,
                                         normalized_score=task.normalized_score(total), deadline_misses=misses,
                                         sources=sources))
    finally:
        env.close()
    all_steps = sum(r.steps for r in results)
    share = {s: sum(r.sources[s] for r in results) / max(all_steps, 1) for s in p.SOURCES}
    rtt = np.asarray(rtts) if rtts else np.zeros(1)
    return SimSummary(task=task.name, episodes=results,
                      mean_return=float(np.mean([r.episode_return for r in results])),
                      mean_normalized_score=float(np.mean([r.normalized_score for r in results])),
                      deadline_misses=sum(r.deadline_misses for r in results), steps=all_steps, source_share=share,
                      fallbacks=sum(r.sources["fallback"] for r in results), rtt_p50_us=float(np.percentile(rtt, 50)),
                      rtt_p99_us=float(np.percentile(rtt, 99)))


class InProcessPolicy:
    """The torch PolicyStack with the server's decision rule, behind the Client interface `run_sim` uses.

    Running `run_sim` with this and with a Client on the exported bundle (same seeds) is the sim-to-sim
    check: the two must agree within noise, or the export/serving path changed the policy.
    """

    def __init__(self, stack: torch.nn.Module, manifest: BundleManifest) -> None:
        self.stack = stack.eval()
        m = manifest
        self.state = DecisionState(m.gate.threshold, m.gate.hysteresis, m.support.threshold, m.support.hysteresis)
        self._seq = 0

    def connect(self) -> None:
        """Nothing to connect to; present so `run_sim` treats both controllers alike."""

    def reset(self, timeout_s: float | None = None) -> None:
        self.state.reset()

    def act(self, obs: np.ndarray, timeout_s: float | None = None) -> p.ActionReply:
        with torch.no_grad():
            raw, latent, advantage, score = (t[0] for t in self.stack(torch.as_tensor(obs)[None]))
        decision = self.state.decide(float(advantage), float(score))
        action = raw if decision.source == "raw" else latent
        self._seq += 1
        return p.ActionReply(seq=self._seq, action=action.numpy(), source=decision.source,
                             gate_advantage=decision.gate_advantage, support_score=decision.support_score,
                             fallbacks=self.state.fallbacks, infer_us=0.0, server_us=0.0)
