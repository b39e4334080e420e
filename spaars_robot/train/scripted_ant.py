"""A scripted goal-reaching Ant: a trot and two turn-in-place gaits, steered by the goal's bearing.

antmaze-*-diverse needs an Ant that walks to a goal given relative to itself (train/maze_waypoints.py steers it
along the maze's cells). SAC on `ant-goal` learnt none in 240k steps, world- or heading-frame goals
(benchmarks/results/ant_goal_sac_heading_frame.json: the policy lay low and drifted 1.4 m an episode), so, as
kitchen-mixed's scripted IK arm, the behaviour is written down instead of learnt: D4RL's recipe only asks for a
goal-reaching Ant, not for a learnt one.

The gait is a central pattern generator read by a PD loop on the joint angles the observation carries: each hip
follows A_h d_leg sin(w t + phi_leg), each ankle its mid-range angle + A_a e_leg sin(w t + phi_leg + psi), trot
phases (diagonal legs together), torque = kp (target - q) - kd q_dot clipped to the action box. Three gaits share the
clock and differ only in the per-leg signs (d, e): forward along the torso's x axis, and turning on the spot to
the left or the right. The constants were found by random search over the pattern (400 draws for the trot, then
all 256 sign patterns for the turns at the trot's timing) on AntMaze's own Ant (`benchmarks/ant_gait_search.py`):
the trot walks 0.8-0.94 m/s straight ahead (seeds 0-2, 10 s, no fall), each turn ~0.88 rad/s with ~0.06 m/s of
drift. Steering is bang-bang with hysteresis on the goal's bearing: turn while it is off by more than
`turn_on` (0.35 rad) until it is within `turn_off` (0.1 rad), then trot.

Gaussian action noise (`action_noise`, from the episode's generator) makes the data's actions cover a
neighbourhood of the script rather than one line, as D4RL's stochastic policy did.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from spaars_robot.algos.latch import Latch

# the Ant's body observation (27): torso z, quaternion (4), joint angles (8: hip_1, ankle_1, ..., hip_4, ankle_4),
# torso velocities (6), joint velocities (8)
JOINT_ANGLES = slice(5, 13)
JOINT_VELOCITIES = slice(19, 27)
# actuator order of AntMaze's ant.xml: hip_4, ankle_4, hip_1, ankle_1, hip_2, ankle_2, hip_3, ankle_3 -> the joint
# (index into the 8 joint angles) each one drives
ACTUATED_JOINT = np.array([6, 7, 0, 1, 2, 3, 4, 5])
ANKLE_MID = np.array([0.87, -0.87, -0.87, 0.87])  # centre of each ankle's range (legs 1-4), rad
TROT_PHASE = np.array([0.0, np.pi, 0.0, np.pi])  # legs 1 and 3 together, 2 and 4 half a cycle later


@dataclass(frozen=True)
class GaitPattern:
    """One periodic gait: the pattern's timing and amplitudes, the PD gains, and the per-leg signs (legs 1-4)."""

    omega: float  # rad/s
    hip_amplitude: float  # rad
    ankle_amplitude: float  # rad
    ankle_lag: float  # rad of phase between a leg's hip and its ankle
    kp: float  # action units per rad
    kd: float  # action units per rad/s
    hip_signs: tuple[float, float, float, float]
    ankle_signs: tuple[float, float, float, float]

    def targets(self, t: float) -> np.ndarray:
        """Target angles of the 8 joints (hip_1, ankle_1, ..., hip_4, ankle_4) at time t (s)."""
        phase = self.omega * t + TROT_PHASE
        targets = np.empty(8)
        targets[0::2] = self.hip_amplitude * np.asarray(self.hip_signs) * np.sin(phase)
        targets[1::2] = ANKLE_MID + self.ankle_amplitude * np.asarray(self.ankle_signs) * np.sin(phase + self.ankle_lag)
        return targets

    def action(self, body: np.ndarray, t: float) -> np.ndarray:
        """Torques (in the action box, actuator order) that pull the joints towards the targets at time t."""
        torque = self.kp * (self.targets(t) - body[JOINT_ANGLES]) - self.kd * body[JOINT_VELOCITIES]
        return np.clip(torque[ACTUATED_JOINT], -1.0, 1.0)


TROT = GaitPattern(omega=10.095, hip_amplitude=0.471, ankle_amplitude=0.297, ankle_lag=5.904, kp=1.653, kd=0.157,
                   hip_signs=(1.0, 1.0, 1.0, 1.0), ankle_signs=(1.0, -1.0, 1.0, -1.0))
GAITS = {
    "forward": TROT,
    "left": replace(TROT, hip_signs=(1.0, 1.0, 1.0, -1.0), ankle_signs=(-1.0, 1.0, 1.0, 1.0)),
    "right": replace(TROT, hip_signs=(-1.0, 1.0, 1.0, 1.0), ankle_signs=(-1.0, -1.0, -1.0, 1.0)),
}


class ScriptedAntWalker:
    """Walks the Ant to a goal given in its heading frame (x ahead, y to the left, m), one action per 0.05 s step."""

    def __init__(self, dt: float = 0.05, action_noise: float = 0.05, turn_on: float = 0.35,
                 turn_off: float = 0.1) -> None:
        if not 0.0 <= turn_off < turn_on:
            raise ValueError(f"turn_off ({turn_off}) must be below turn_on ({turn_on}) and not negative")
        self.dt, self.action_noise = dt, action_noise
        self.turning = Latch(turn_on, turn_on - turn_off)  # the project's one hysteresis rule, on |bearing|
        self.step_index, self.gait = 0, "forward"

    def begin_episode(self, generator: torch.Generator) -> None:
        self.step_index, self.gait = 0, "forward"
        self.turning.reset()

    def steer(self, goal_heading_frame: np.ndarray) -> str:
        """The gait for this step; a turn keeps its side until the bearing is back within `turn_off`."""
        bearing = float(np.arctan2(goal_heading_frame[1], goal_heading_frame[0]))
        if not self.turning.update(abs(bearing)):
            self.gait = "forward"
        elif self.gait == "forward":
            self.gait = "left" if bearing > 0 else "right"
        return self.gait

    def act(self, body: np.ndarray, goal_heading_frame: np.ndarray, generator: torch.Generator) -> np.ndarray:
        action = GAITS[self.steer(goal_heading_frame)].action(body, self.step_index * self.dt)
        self.step_index += 1
        if self.action_noise > 0:
            action = action + self.action_noise * torch.randn(8, generator=generator, dtype=torch.float64).numpy()
        return np.clip(action, -1.0, 1.0)
