"""Client-side watchdog: what the controller applies when the server's answer is late or missing.

States (unitree_rl_lab's timeout -> Passive, MoveIt Servo's 100 ms halt, anchors section C):

    WAIT_HANDSHAKE --handshake--> RUNNING
    RUNNING --missed deadline--> HOLD          hold the last safe action (or the latent fallback)
    HOLD    --fresh reply------> RUNNING       one late packet is not a fault
    HOLD    --N missed periods-> DAMP          decay the held action towards zero (or zero it)
    any     --no fresh reply for safe_stop_after_s--> SAFE_STOP   zero action
    DAMP / SAFE_STOP --handshake--> RUNNING    only a fresh handshake recovers

DAMP and SAFE_STOP do not recover on a late reply: by then the robot has moved away from what the
policy last saw, and the server's per-client state (rate-limit history, gate hysteresis) is stale,
so the session is re-established first. A reply older than the deadline is never applied (age
check), whatever the state.

The clock is injectable (`clock=`) so tests drive time exactly.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from spaars_robot.safety.spec import WatchdogSpec

log = logging.getLogger("spaars_robot.safety.watchdog")


class WatchdogState(StrEnum):
    WAIT_HANDSHAKE = "wait_handshake"
    RUNNING = "running"
    HOLD = "hold"
    DAMP = "damp"
    SAFE_STOP = "safe_stop"


@dataclass(frozen=True, slots=True)
class Transition:
    """One logged state change: when (watchdog clock), from, to, and why."""

    time: float
    previous: WatchdogState
    state: WatchdogState
    reason: str


@dataclass(frozen=True, slots=True)
class WatchdogCommand:
    """What to apply this period: the action, the state that chose it, and whether it is fresh."""

    action: np.ndarray
    state: WatchdogState
    fresh: bool
    reply_age_s: float | None


class Watchdog:
    """Call `handshake_ok()` after each successful handshake and `step(...)` once per control period."""

    def __init__(self, spec: WatchdogSpec, period_s: float, action_dim: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if period_s <= 0:
            raise ValueError("period_s must be > 0")
        self.spec = spec
        self.period_s = period_s
        self.deadline_s = spec.deadline_s if spec.deadline_s is not None else period_s
        self.action_dim = action_dim
        self.clock = clock
        self.state = WatchdogState.WAIT_HANDSHAKE
        self.transitions: list[Transition] = []
        self.missed_in_a_row = 0
        self.deadline_misses = 0
        self.stale_replies = 0
        self.last_fresh_at: float | None = None
        self.last_safe_action = np.zeros(action_dim)
        self._damped_action = np.zeros(action_dim)

    def handshake_ok(self) -> None:
        """A fresh handshake succeeded: the only way out of WAIT_HANDSHAKE, DAMP and SAFE_STOP."""
        now = self.clock()
        self.last_fresh_at = now
        self.missed_in_a_row = 0
        if self.state is not WatchdogState.RUNNING:
            self._go(WatchdogState.RUNNING, now, "fresh handshake")

    def connection_lost(self, reason: str) -> None:
        """The transport gave up (socket rebuilt, server gone): stop now rather than wait out the timer."""
        if self.state is not WatchdogState.SAFE_STOP:
            self._go(WatchdogState.SAFE_STOP, self.clock(), f"connection lost: {reason}")

    def is_fresh(self, sent_at: float, now: float | None = None) -> bool:
        """Age check: a reply to a request sent at `sent_at` may be applied only within the deadline."""
        return ((self.clock() if now is None else now) - sent_at) <= self.deadline_s

    def step(self, reply_action: np.ndarray | None, sent_at: float | None = None,
             fallback_action: np.ndarray | None = None) -> WatchdogCommand:
        """One control period. `reply_action` is the server's answer this period (None if none came),
        `sent_at` the watchdog-clock time its request was sent; `fallback_action` the latent action to
        hold with when `hold_source: latent`. Returns the action to apply."""
        now = self.clock()
        age = None if sent_at is None else now - sent_at
        fresh = reply_action is not None and age is not None and age <= self.deadline_s
        if reply_action is not None and not fresh:
            self.stale_replies += 1
        if fresh and np.all(np.isfinite(reply_action)):
            self.last_fresh_at = now
            self.missed_in_a_row = 0
            if self.state in (WatchdogState.RUNNING, WatchdogState.HOLD):
                if self.state is WatchdogState.HOLD:
                    self._go(WatchdogState.RUNNING, now, "fresh reply within deadline")
                self.last_safe_action = np.array(reply_action, dtype=np.float64)
                return WatchdogCommand(self.last_safe_action.copy(), self.state, True, age)
            # DAMP / SAFE_STOP / WAIT_HANDSHAKE: a reply alone does not recover; fall through.
        elif self.state in (WatchdogState.RUNNING, WatchdogState.HOLD, WatchdogState.DAMP):
            self.missed_in_a_row += 1
            self.deadline_misses += 1
            why = "no reply" if reply_action is None else (
                "non-finite reply" if fresh else f"stale reply (age {age * 1e3:.1f} ms > deadline)")
            if self.state is WatchdogState.RUNNING:
                self._go(WatchdogState.HOLD, now, f"missed deadline: {why}")
            if (self.state is WatchdogState.HOLD
                    and self.missed_in_a_row >= self.spec.damp_after_missed):
                self._damped_action = self._hold_action(fallback_action)
                self._go(WatchdogState.DAMP, now, f"{self.missed_in_a_row} missed periods in a row")
        since_fresh = None if self.last_fresh_at is None else now - self.last_fresh_at
        if (self.state in (WatchdogState.RUNNING, WatchdogState.HOLD, WatchdogState.DAMP)
                and since_fresh is not None and since_fresh >= self.spec.safe_stop_after_s):
            self._go(WatchdogState.SAFE_STOP, now,
                     f"no fresh reply for {since_fresh * 1e3:.1f} ms (limit {self.spec.safe_stop_after_s * 1e3:.0f} ms)")
        return WatchdogCommand(self._action_for_state(fallback_action), self.state, False, age)

    def _hold_action(self, fallback_action: np.ndarray | None) -> np.ndarray:
        if (self.spec.hold_source == "latent" and fallback_action is not None
                and np.all(np.isfinite(fallback_action))):
            return np.array(fallback_action, dtype=np.float64)
        return self.last_safe_action.copy()

    def _action_for_state(self, fallback_action: np.ndarray | None) -> np.ndarray:
        if self.state is WatchdogState.HOLD:
            return self._hold_action(fallback_action)
        if self.state is WatchdogState.DAMP:
            if self.spec.damp_mode == "zero":
                return np.zeros(self.action_dim)
            self._damped_action = self._damped_action * self.spec.damp_factor
            return self._damped_action.copy()
        return np.zeros(self.action_dim)

    def _go(self, state: WatchdogState, now: float, reason: str) -> None:
        transition = Transition(now, self.state, state, reason)
        self.transitions.append(transition)
        level = logging.INFO if state is WatchdogState.RUNNING else logging.WARNING
        log.log(level, "watchdog %s -> %s: %s", transition.previous, state, reason)
        self.state = state
