"""The safety layer: the last thing every action passes through before it leaves the server.

Order of operations on each request (after policy, gate and support monitor have picked an action):

1. observation bounds: an observation outside `SafetySpec.observation` is out of distribution; it is
   flagged (`observation_ood`) and, per spec, the answer becomes the last safe action or zeros (only then
   is `observation_bounds` listed among the limits that changed the action);
2. non-finite actions: NaN/inf is replaced by the last safe action or zeros, or rejected;

A *hold* (the spec's `hold` / `hold_last`, or `SafetyLayer.hold` for an unreadable observation) repeats the
previous applied action exactly and skips steps 3-6: that action already passed them, and shaping it again
would move it (the soft zone is not idempotent: a held 0.92 crept 0.920 -> 0.900 -> 0.890 -> 0.885). Under
`joint_limits` the repeat is still clamped to the step's effort bound, which depends on the joint's new state.
3. soft zone (Polymetis-style push-back): inside `soft_zone` of the hard bound the penetration is
   scaled by `1 - soft_stiffness`, a virtual spring that keeps commands off the hard limit;
4. hard bounds: clamp to `[low + margin, high - margin]`; then, for torque commands with `joint_limits`,
   the effort bound of each joint's position and velocity (`safety/joint_limits.py`, ros_control's soft
   limits), which lies inside the hard bound;
5. jerk -> acceleration -> rate limits relative to the previous *applied* action, in that order, as
   libfranka's `limitRate` does (the higher derivative constrains the lower one);
6. a final clamp to this step's bounds (hard, and the joints' effort bounds), because a rate limit may carry
   the action past a bound while decelerating; the bound always wins over smoothness.

Every limit that changes the action is reported by kind and counted, per client and in total.
The layer is pure numpy on a handful of floats; the common path (nothing acts) costs a few
microseconds (measured by `benchmarks/safety_apply.py`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from spaars_robot.errors import SafetySpecMismatch, UnsafeActionError
from spaars_robot.safety.joint_limits import EffortBounds
from spaars_robot.safety.spec import SafetySpec

LIMIT_KINDS = ("observation_bounds", "nonfinite", "soft_zone", "bounds", "joint_limits", "jerk", "accel", "rate")


def _zero_counts() -> dict[str, int]:
    return dict.fromkeys(LIMIT_KINDS, 0)


@dataclass(slots=True)
class ClientSafetyState:
    """What the layer remembers per client: the last applied action and its differences.

    One per connected controller: a rate limit across two robots' streams would be meaningless.
    Create with `SafetyLayer.new_state()` at handshake; make a fresh one after a reconnect, because
    the robot may have moved while the link was down.
    """

    prev_action: np.ndarray | None
    prev_d1: np.ndarray | None = None
    prev_d2: np.ndarray | None = None
    steps: int = 0
    counts: dict[str, int] = field(default_factory=_zero_counts)

    def last_safe_action(self, dim: int) -> np.ndarray:
        return np.zeros(dim) if self.prev_action is None else self.prev_action.copy()


class SafetyResult(NamedTuple):
    """The action to send, which limits acted (in order of application), the OOD flag, and whether it is a hold.

    `held`: the action is the previous applied one, repeated (the server reports such answers with source `hold`).
    """

    action: np.ndarray
    limits: tuple[str, ...]
    observation_ood: bool
    held: bool = False


class SafetyLayer:
    """Applies one `SafetySpec` to each action; state is per client, counters are shared."""

    def __init__(self, spec: SafetySpec, action_dim: int | None = None, obs_dim: int | None = None) -> None:
        if action_dim is not None:
            spec.check_action_space(action_dim)
        if obs_dim is not None:
            spec.check_observation_space(obs_dim)
        self.spec = spec
        limits = spec.action
        self.dim = limits.dim
        self.hard_low, self.hard_high = limits.hard_bounds()
        soft = limits.vector("soft_zone")
        # A dim with no soft zone gets an infinite edge so the push-back never touches it.
        self.soft_high = np.where(soft > 0, self.hard_high - soft, np.inf)
        self.soft_low = np.where(soft > 0, self.hard_low + soft, -np.inf)
        self.soft_keep = 1.0 - limits.soft_stiffness
        self.has_soft = bool((soft > 0).any())
        # Inside [inner_low, inner_high] nothing but the rate limits can act (NaN compares False):
        # one pair of comparisons replaces the non-finite, soft-zone and bound checks on the common path.
        self.inner_low = np.where(soft > 0, self.soft_low, self.hard_low)
        self.inner_high = np.where(soft > 0, self.soft_high, self.hard_high)
        self.rate = limits.vector("rate_limit")
        self.accel = limits.vector("accel_limit")
        self.jerk = limits.vector("jerk_limit")
        self.effort = None if limits.joint_limits is None else \
            EffortBounds(limits.joint_limits, self.dim, self.hard_low, self.hard_high)
        obs = spec.observation
        self.obs_low = None if obs is None else np.full(obs.dim, 0.0) + np.asarray(obs.low, dtype=np.float64)
        self.obs_high = None if obs is None else np.full(obs.dim, 0.0) + np.asarray(obs.high, dtype=np.float64)
        self.counts: dict[str, int] = _zero_counts()

    def new_state(self, initial_action: np.ndarray | None = None) -> ClientSafetyState:
        """Per-client state. Torque commands start from zero torque, so the first action is rate
        limited from rest; position/velocity commands have no history until the first reply (pass
        the measured position as `initial_action` to rate-limit the very first command too)."""
        if initial_action is None and self.spec.action.kind == "torque" and self.rate is not None:
            initial_action = np.zeros(self.dim)
        if initial_action is not None:
            initial_action = np.asarray(initial_action, dtype=np.float64).copy()
            if initial_action.shape != (self.dim,):
                raise SafetySpecMismatch(f"initial action has shape {initial_action.shape}, expected ({self.dim},)")
        return ClientSafetyState(prev_action=initial_action)

    def check_observation(self, observation: np.ndarray) -> bool:
        """True when the observation is inside its bounds (NaN counts as outside)."""
        if self.obs_low is None:
            return True
        return bool((observation >= self.obs_low).all() and (observation <= self.obs_high).all())

    def apply(self, action: np.ndarray, state: ClientSafetyState,
              observation: np.ndarray | None = None) -> SafetyResult:
        """Limit one action for one client; raises UnsafeActionError only under `nonfinite: reject`."""
        a = np.array(action, dtype=np.float64)
        if a.shape != (self.dim,):
            raise SafetySpecMismatch(f"action has shape {a.shape}, safety spec expects ({self.dim},)")
        acted: list[str] = []
        ood = False
        hold = False
        if observation is not None and self.obs_low is not None and not self.check_observation(observation):
            ood = True
            mode = self.spec.observation.on_out_of_bounds  # type: ignore[union-attr]
            if mode == "hold":
                acted.append("observation_bounds")
                hold = True
            elif mode == "zero":
                acted.append("observation_bounds")
                a = np.zeros(self.dim)
        if not hold and not ((a >= self.inner_low).all() and (a <= self.inner_high).all()):
            if not np.isfinite(a).all():
                acted.append("nonfinite")
                if self.spec.nonfinite == "reject":
                    self._count(state, acted)
                    raise UnsafeActionError("policy produced a NaN/inf action; rejected by the safety spec")
                if self.spec.nonfinite == "hold_last":
                    hold = True
                else:
                    a = np.zeros(self.dim)
        if hold and state.prev_action is not None:
            return self._repeat(state, acted, ood, observation)
        if hold:  # nothing applied yet: the "last safe action" is zeros, which still goes through the limits
            a = np.zeros(self.dim)
        if not ((a >= self.inner_low).all() and (a <= self.inner_high).all()):
            if self.has_soft:
                over, under = a > self.soft_high, a < self.soft_low
                if over.any() or under.any():
                    acted.append("soft_zone")
                    a = np.where(over, self.soft_high + self.soft_keep * (a - self.soft_high), a)
                    a = np.where(under, self.soft_low + self.soft_keep * (a - self.soft_low), a)
            if (a > self.hard_high).any() or (a < self.hard_low).any():
                acted.append("bounds")
                a = np.minimum(np.maximum(a, self.hard_low), self.hard_high)
        low, high = self.hard_low, self.hard_high
        if self.effort is not None:
            if observation is None:
                raise SafetySpecMismatch("this safety spec's joint limits need the observation with each action")
            low, high = self.effort(observation)
            if (a > high).any() or (a < low).any():
                acted.append("joint_limits")
                a = np.minimum(np.maximum(a, low), high)
        prev = state.prev_action
        d1 = None
        if self.rate is not None and prev is not None:
            d1 = a - prev
            acted_before = len(acted)
            if self.jerk is not None and state.prev_d2 is not None:
                d3 = d1 - state.prev_d1 - state.prev_d2
                if (d3 > self.jerk).any() or (d3 < -self.jerk).any():
                    acted.append("jerk")
                    d1 = state.prev_d1 + state.prev_d2 + np.minimum(np.maximum(d3, -self.jerk), self.jerk)
            if self.accel is not None and state.prev_d1 is not None:
                d2 = d1 - state.prev_d1
                if (d2 > self.accel).any() or (d2 < -self.accel).any():
                    acted.append("accel")
                    d1 = state.prev_d1 + np.minimum(np.maximum(d2, -self.accel), self.accel)
            if not (np.abs(d1) <= self.rate).all():
                acted.append("rate")
                d1 = np.minimum(np.maximum(d1, -self.rate), self.rate)
            if len(acted) > acted_before:
                a = prev + d1
                if (a > high).any() or (a < low).any():
                    kind = "bounds" if (a > self.hard_high).any() or (a < self.hard_low).any() else "joint_limits"
                    if kind not in acted:
                        acted.append(kind)
                    a = np.minimum(np.maximum(a, low), high)
                    d1 = a - prev
        if d1 is not None and self.accel is not None:
            state.prev_d2 = None if state.prev_d1 is None else d1 - state.prev_d1
            state.prev_d1 = d1
        state.prev_action = a
        state.steps += 1
        if acted:
            self._count(state, acted)
        return SafetyResult(a, tuple(acted), ood)

    def hold(self, state: ClientSafetyState, observation_ood: bool = True) -> SafetyResult:
        """Repeat the previous applied action (an unreadable observation: nothing to run the policy on).

        Before any action was applied there is nothing to repeat: zeros, through the limits like any action.
        """
        if state.prev_action is None:
            return self.apply(np.zeros(self.dim), state)._replace(observation_ood=observation_ood, held=True)
        return self._repeat(state, [], observation_ood)

    def _repeat(self, state: ClientSafetyState, acted: list[str], ood: bool,
                observation: np.ndarray | None = None) -> SafetyResult:
        """The previous applied action, unchanged; the rate history records a standstill.

        With joint limits and an observation, the repeated torque is still clamped to this step's effort bound
        (a clamp is idempotent, unlike the soft zone): a torque that was safe a step ago may drive the joint
        into its limit now. Without an observation (unreadable) there is no state to bound it by.
        """
        a = state.prev_action.copy()  # type: ignore[union-attr]
        if self.effort is not None and observation is not None:
            low, high = self.effort(observation)
            if (a > high).any() or (a < low).any():
                acted = [*acted, "joint_limits"]
                a = np.minimum(np.maximum(a, low), high)
                state.prev_action = a.copy()
        if self.accel is not None and state.prev_d1 is not None:
            state.prev_d2 = -state.prev_d1
        if self.accel is not None:
            state.prev_d1 = np.zeros(self.dim)
        state.steps += 1
        if acted:
            self._count(state, acted)
        return SafetyResult(a, tuple(acted), ood, held=True)

    def _count(self, state: ClientSafetyState, acted: list[str]) -> None:
        for kind in acted:
            self.counts[kind] += 1
            state.counts[kind] += 1
