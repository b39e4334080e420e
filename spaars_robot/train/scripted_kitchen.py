"""A scripted Franka Kitchen controller for the `kitchen-mixed` dataset (D4RL's mixed split, made here).

D4RL's kitchen data are human VR teleoperation demos; nothing can be downloaded here, so the project makes its
own with a controller that does what those demos do: reach, grasp, pull, push, twist and carry, one subtask
after another, in an order drawn per episode. It reads only the flat observation the dataset stores (robot
joints, object joints), so the dataset is a function of (observation, episode seed) like the SAC rollouts.

Control is resolved-rate Jacobian IK on a private kinematic copy of the env's MuJoCo model: the end effector's
Cartesian error becomes a joint velocity through a damped pseudo-inverse (orientation held by the rotational
rows; the null space pulls towards the start posture, so the redundant elbow does not drift into the cabinets).
FrankaKitchen-v1 turns an action `a` into a position target `q + 2 a dt` for stiff position actuators, which
sag under gravity by `g(q) / kp`: that offset is added back (`Kinematics.gravity_offset`), without which the
hand stops ~5 cm below every target and passes under the light switch.

Why this is "mixed": each episode performs 3-4 subtasks drawn from {microwave, kettle, bottom burner, light
switch, slide cabinet} in a random order, and an episode never contains all four of the evaluation's targets
(microwave, kettle, bottom burner, light switch), as in D4RL's kitchen-mixed, where the full target set is
never demonstrated in one episode and must be stitched. Noise: Gaussian action noise, per-episode jitter of
every waypoint and of the hand speed. The hinge cabinet (a 66 degree door swing) is not scripted.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mujoco
import numpy as np
import torch

from spaars_robot.config.tasks import TaskSpec
from spaars_robot.errors import SpaarsError
from spaars_robot.train.collect import Behaviour

ENV_ID = "FrankaKitchen-v1"
ROBOT_QPOS = slice(0, 9)       # flat observation: 9 robot joint positions, 9 velocities,
OBJECT_QPOS = slice(18, 39)    # then the 21 object joint positions (qpos[9:30])
STEP_SECONDS = 0.08            # FrankaKitchen-v1: frame_skip 40 x 2 ms
ACTION_SCALE = 2.0             # the env's act_rng: joint velocity = 2 x action
TARGETS = ("microwave", "kettle", "bottom burner", "light switch")
SUBTASKS = (*TARGETS, "slide cabinet")
OPEN, CLOSE = 1.0, -1.0
CARRY_SPEED = 0.3  # m/s with the kettle in hand: faster swings it off the handle
LIMIT_MARGIN = 0.05  # rad: inside this distance of a joint limit, IK stops using the joint in that direction


def rotation(axis: np.ndarray | list[float], angle: float) -> np.ndarray:
    """Rodrigues' rotation matrix about `axis` (world frame)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def rotate_about_z(point: np.ndarray, anchor: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    r = point - anchor
    return anchor + np.array([c * r[0] - s * r[1], s * r[0] + c * r[1], r[2]])


class Kinematics:
    """The kitchen's MuJoCo model posed from an observation: sites, the hand's Jacobian, gravity."""

    def __init__(self, model: mujoco.MjModel) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.hand = model.site("end_effector").id
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self._kp = model.actuator_gainprm[:9, 0].copy()
        self._low, self._high = model.jnt_range[:7, 0].copy(), model.jnt_range[:7, 1].copy()

    def pose(self, obs: np.ndarray) -> None:
        self.data.qpos[:9] = obs[ROBOT_QPOS]
        self.data.qpos[9:30] = obs[OBJECT_QPOS]
        self.data.qvel[:] = 0.0
        mujoco.mj_forward(self.model, self.data)  # qfrc_bias at zero velocity = gravity

    def site(self, name: str) -> np.ndarray:
        return self.data.site_xpos[self.model.site(name).id].copy()

    def hand_position(self) -> np.ndarray:
        return self.data.site_xpos[self.hand].copy()

    def hand_rotation(self) -> np.ndarray:
        return self.data.site_xmat[self.hand].reshape(3, 3).copy()

    def gravity_offset(self) -> np.ndarray:
        """Joint offsets the position actuators need to hold the arm where it is against gravity."""
        return self.data.qfrc_bias[:7] / self._kp[:7]

    def joint_velocity(self, linear: np.ndarray, target_rotation: np.ndarray, posture: np.ndarray,
                       rot_gain: float = 3.0, posture_gain: float = 0.5, damping: float = 0.05) -> np.ndarray:
        """Damped least squares: arm joint velocities for a hand velocity and an orientation to hold."""
        mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.hand)
        jac = np.vstack([self._jacp[:, :7], self._jacr[:, :7]])
        current = self.hand_rotation()
        rot_error = 0.5 * sum(np.cross(current[:, i], target_rotation[:, i]) for i in range(3))
        twist = np.concatenate([linear, np.clip(rot_gain * rot_error, -1.5, 1.5)])
        q = self.data.qpos[:7]
        free = np.ones(7, bool)
        for _ in range(3):  # a joint at its limit that the solution pushes further is dropped and the rest re-solved
            jac_free = jac * free
            pinv = jac_free.T @ np.linalg.inv(jac_free @ jac_free.T + damping ** 2 * np.eye(6))
            null = (np.eye(7) - pinv @ jac_free) @ (posture_gain * (posture - q)) * free
            qdot = pinv @ twist + null
            blocked = free & (((q <= self._low + LIMIT_MARGIN) & (qdot < 0)) | ((q >= self._high - LIMIT_MARGIN) & (qdot > 0)))
            if not blocked.any():
                break
            free &= ~blocked
        return qdot


Target = Callable[[Kinematics], np.ndarray]


@dataclass(frozen=True)
class Phase:
    """Move the hand towards `target` with the gripper at `grip` until within `tol` or `max_steps` pass."""

    target: Target
    grip: float
    tol: float | None
    max_steps: int
    twist: float = 0.0  # rotation of the hand about world +y from its start orientation (knobs, the kettle grip)
    speed: float | None = None  # a lower hand speed (m/s) than the episode's, for carrying


def _at(site: str, offset: np.ndarray) -> Target:
    return lambda kin: kin.site(site) + offset


def _fixed(point: np.ndarray) -> Target:
    return lambda kin: point


def subtask_phases(name: str, kin: Kinematics, jitter: Callable[[], np.ndarray]) -> list[Phase]:
    """The phases of one subtask; waypoints are read from the model when the plan is made, then jittered."""
    j = jitter
    if name == "microwave":  # grasp the handle, then follow the door's arc about its hinge to ~-0.9 rad
        handle, hinge = kin.site("microhandle_site"), kin.data.xanchor[kin.model.joint("microwave").id].copy()
        grasp = handle + j()
        arc = [Phase(_fixed(rotate_about_z(grasp, hinge, -0.12 * (k + 1))), CLOSE, 0.03, 8) for k in range(8)]
        return [Phase(_fixed(grasp + [0.0, -0.15, 0.0]), OPEN, 0.03, 40), Phase(_fixed(grasp), OPEN, 0.015, 20),
                Phase(_fixed(grasp), CLOSE, None, 6), *arc, Phase(_fixed(arc[-1].target(kin)), OPEN, None, 4)]
    if name == "light switch":  # push the switch's lever to the left
        lever = kin.site("light_site") + j()
        return [Phase(_fixed(lever + [0.08, -0.08, 0.0]), OPEN, 0.03, 40),
                Phase(_fixed(lever + [0.06, 0.0, 0.0]), OPEN, 0.02, 20),
                Phase(_fixed(lever + [-0.12, 0.0, 0.0]), OPEN, None, 22)]
    if name == "slide cabinet":  # push the door's handle to the right
        handle = kin.site("slide_site") + j()
        return [Phase(_fixed(handle + [-0.08, -0.10, 0.0]), OPEN, 0.03, 45),
                Phase(_fixed(handle + [-0.06, 0.0, 0.0]), OPEN, 0.02, 20),
                Phase(_fixed(handle + [0.20, 0.0, 0.0]), OPEN, None, 22)]
    if name == "bottom burner":  # grasp the knob and twist it to ~-0.9 rad (joint axis is world -y; goal -0.88)
        knob = kin.site("knob2_site") + j()
        twists = [Phase(_fixed(knob), CLOSE, None, 5, twist=0.15 * (k + 1)) for k in range(6)]
        return [Phase(_fixed(knob + [0.0, -0.12, 0.0]), OPEN, 0.03, 40), Phase(_fixed(knob), OPEN, 0.015, 20),
                Phase(_fixed(knob), CLOSE, None, 6, twist=0.0), *twists,
                Phase(_fixed(knob), OPEN, None, 4, twist=0.9)]
    if name == "kettle":  # grip the top handle with the fingers closing vertically, carry it to the top burner
        handle = kin.site("kettle_site") + j()
        lift = handle + [0.0, 0.0, 0.10]
        place = np.array([-0.23, 0.75, handle[2]]) + j()
        quarter = np.pi / 2
        return [Phase(_fixed(handle + [0.0, -0.15, 0.0]), OPEN, 0.03, 40, quarter),
                Phase(_fixed(handle), OPEN, 0.015, 20, quarter), Phase(_fixed(handle), CLOSE, None, 8, quarter),
                Phase(_fixed(lift), CLOSE, 0.03, 20, quarter, CARRY_SPEED),
                Phase(_fixed(place + [0.0, 0.0, 0.08]), CLOSE, 0.03, 45, quarter, CARRY_SPEED),
                # the kettle's weight makes the hand sag ~4 cm more than gravity_offset knows: aim below the handle
                Phase(_fixed(place + [0.0, 0.0, -0.04]), CLOSE, 0.02, 15, quarter, CARRY_SPEED),
                Phase(_fixed(place + [0.0, 0.0, -0.04]), OPEN, None, 6, quarter),
                Phase(_fixed(place + [0.0, -0.20, 0.07]), OPEN, 0.03, 20, quarter)]
    raise SpaarsError(f"no script for kitchen subtask {name!r}; scripted: {', '.join(SUBTASKS)}")


def _retreat(kin: Kinematics, twist: float) -> list[Phase]:
    """Back straight away from what was touched (keeping the hand's twist, so a released knob is not turned
    back), then through a via point in front of the counter."""
    here = kin.hand_position()
    return [Phase(_fixed(here + [0.0, -0.12, 0.0]), OPEN, 0.03, 12, twist),
            Phase(_fixed(np.array([-0.35, 0.30, 2.10])), OPEN, 0.05, 25)]


def draw_plan(generator: torch.Generator) -> list[str]:
    """3 or 4 distinct subtasks in a random order that never include all four evaluation targets."""
    while True:
        count = 3 + int(torch.randint(0, 2, (1,), generator=generator))
        order = torch.randperm(len(SUBTASKS), generator=generator)[:count].tolist()
        plan = [SUBTASKS[i] for i in order]
        if not set(TARGETS) <= set(plan):
            return plan


class ScriptedKitchen(Behaviour):
    """A behaviour policy (begin_episode / act) for FrankaKitchen-v1's flat observation."""

    def __init__(self, task: TaskSpec, model: mujoco.MjModel, action_noise: float = 0.1,
                 waypoint_jitter: float = 0.01) -> None:
        if task.env_id != ENV_ID or task.obs_dim < OBJECT_QPOS.stop or task.action_dim != 9:
            raise SpaarsError(f"the scripted kitchen controller drives {ENV_ID} with the flat observation "
                              f"(robot, objects first; >= {OBJECT_QPOS.stop} dims) and 9 actions; task "
                              f"{task.name!r} is {task.env_id} with {task.obs_dim} / {task.action_dim}")
        self.kin = Kinematics(model)
        self.action_noise, self.waypoint_jitter = action_noise, waypoint_jitter
        self.plan: list[str] = []

    def begin_episode(self, generator: torch.Generator) -> None:
        self.generator = generator
        self.plan = draw_plan(generator)
        self.speed = 0.5 + 0.3 * float(torch.rand((), generator=generator))
        self.phases: list[Phase] = []
        self.subtask = -1
        self.phase, self.steps_in_phase = 0, 0
        self.start_rotation: np.ndarray | None = None

    def _jitter(self) -> np.ndarray:
        return (torch.rand(3, generator=self.generator).numpy() * 2.0 - 1.0) * self.waypoint_jitter

    def _next_phase(self) -> Phase | None:
        while self.phase >= len(self.phases):
            if self.subtask + 1 >= len(self.plan):
                return None
            self.subtask += 1
            self.phases = (_retreat(self.kin, self.phases[-1].twist) if self.subtask > 0 else []) + \
                subtask_phases(self.plan[self.subtask], self.kin, self._jitter)
            self.phase, self.steps_in_phase = 0, 0
        return self.phases[self.phase]

    def act(self, obs: np.ndarray, generator: torch.Generator) -> np.ndarray:
        kin = self.kin
        kin.pose(obs)
        if self.start_rotation is None:
            self.start_rotation, self.posture = kin.hand_rotation(), obs[:7].copy()
        action = np.zeros(9)
        while (phase := self._next_phase()) is not None:
            target = phase.target(kin)
            done = self.steps_in_phase >= phase.max_steps or (
                phase.tol is not None and np.linalg.norm(target - kin.hand_position()) < phase.tol)
            if not done:
                break
            self.phase, self.steps_in_phase = self.phase + 1, 0
        if phase is None:  # plan finished: hold still (the noise keeps the data from being constant)
            target, grip, twist = kin.hand_position(), OPEN, 0.0
        else:
            self.steps_in_phase += 1
            grip, twist = phase.grip, phase.twist
        speed = self.speed if phase is None or phase.speed is None else min(self.speed, phase.speed)
        velocity = 8.0 * (target - kin.hand_position())
        norm = np.linalg.norm(velocity)
        if norm > speed:
            velocity *= speed / norm
        rotation_target = rotation([0.0, 1.0, 0.0], twist) @ self.start_rotation
        qdot = kin.joint_velocity(velocity, rotation_target, self.posture)
        action[:7] = qdot / ACTION_SCALE + kin.gravity_offset() / (ACTION_SCALE * STEP_SECONDS)
        action[7:] = grip
        action[:7] += torch.randn(7, generator=generator).numpy() * self.action_noise
        return np.clip(action, -1.0, 1.0)
