"""Soft joint limits for torque-commanded joints: the effort bound each joint may receive, from its state.

The spec's `soft_zone` bends every torque command near the actuator's range, wherever the joint is: it is a
device for position commands (keep the command off a joint limit) applied to torques, where no such limit
exists, and it costs a torque-controlled gait 10-70 points (BENCHMARKS "What the safety spec costs"). A
torque-controlled robot protects its *joint position* limits instead, the way ros_control's
`EffortJointSoftLimitsHandle` (joint_limits_interface) does:

    v_min = clamp(-k_position * (q - lower), -v_max, v_max)      # how fast the joint may still move
    v_max' = clamp(-k_position * (q - upper), -v_max, v_max)      #   towards each soft position limit
    effort in [clamp(-k_velocity * (dq - v_min), -e, e), clamp(-k_velocity * (dq - v_max'), -e, e)]

Far from the limits and at moderate speed the bound is the full actuator range (nothing acts); as a joint
closes on a soft limit, the velocity it may have towards it shrinks to zero, and torque that would drive it
faster is cut, down to a braking torque once it is past. `e` is the spec's hard bound, so the effort bound
always lies inside it. A joint whose position or velocity reading is not finite gets zero torque (passive),
as unitree_rl_lab's Passive mode: no bound can be computed for a joint whose state is unknown.

It is not free either: on hopper, whose gait presses the knee on its stop, it costs the shipped bundle more than
the soft zone does (BENCHMARKS "Soft joint limits instead of the torque soft zone"), so it is offered beside the
soft zone, not in its place.
"""
from __future__ import annotations

import numpy as np

from spaars_robot.errors import SafetySpecMismatch
from spaars_robot.safety.spec import JointSoftLimits


class EffortBounds:
    """Per-step effort bounds of the torque-commanded joints, read from the observation."""

    def __init__(self, limits: JointSoftLimits, dim: int, hard_low: np.ndarray, hard_high: np.ndarray) -> None:
        self.position_index = np.asarray(limits.position_index, dtype=np.intp)
        self.velocity_index = np.asarray(limits.velocity_index, dtype=np.intp)
        self.lower, self.upper = limits.vector("lower", dim), limits.vector("upper", dim)
        self.k_position, self.k_velocity = limits.vector("k_position", dim), limits.vector("k_velocity", dim)
        self.max_velocity = limits.vector("max_velocity", dim)
        self.hard_low, self.hard_high = hard_low, hard_high
        self.needs = limits.highest_index() + 1

    def __call__(self, observation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) effort bounds for this observation, inside [hard_low, hard_high]."""
        obs = np.asarray(observation, dtype=np.float64)
        if obs.ndim != 1 or obs.shape[0] < self.needs:
            raise SafetySpecMismatch(f"the safety spec's joint limits read observation index {self.needs - 1}, "
                                     f"but the observation has shape {obs.shape}")
        q, dq = obs[self.position_index], obs[self.velocity_index]
        v_low = np.clip(-self.k_position * (q - self.lower), -self.max_velocity, self.max_velocity)
        v_high = np.clip(-self.k_position * (q - self.upper), -self.max_velocity, self.max_velocity)
        low = np.clip(-self.k_velocity * (dq - v_low), self.hard_low, self.hard_high)
        high = np.clip(-self.k_velocity * (dq - v_high), self.hard_low, self.hard_high)
        known = np.isfinite(q) & np.isfinite(dq)
        if not known.all():
            low, high = np.where(known, low, 0.0), np.where(known, high, 0.0)
        return low, high
