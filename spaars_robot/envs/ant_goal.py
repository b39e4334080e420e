"""AntMaze's Ant reaching goals in an open arena: where the goal-reaching policy behind antmaze-*-diverse learns.

D4RL made its antmaze datasets by driving a goal-reaching Ant policy along maze waypoints; that policy was trained
without the maze, to walk to a goal given relative to itself. This is that training env, built from the same
gymnasium-robotics AntMaze (the same Ant model, 0.05 s steps, no contact forces) on an open map, so what it learns
transfers to the maze unchanged:

- observation (29): AntMaze's 27 body dims (torso z, orientation, joint angles, velocities), then the goal relative
  to the torso in the torso's heading frame (m; x ahead, y to the left: `goal_in_heading_frame`) -- what a maze
  waypoint follower hands it. Heading-relative, because "the goal is ahead: walk forward" is one gait to learn for
  every goal, where a world-frame offset asks the policy to rotate it by the quaternion first; with world-frame
  offsets SAC had learnt no progress towards goals after 175k steps (evaluations flat at -30 to -50);
- goals: drawn 1-6 m away in a random direction, kept 1 m inside the arena's walls; a goal reached (torso within
  0.5 m) pays a bonus and is replaced at once, so an episode is a chain of goals, as waypoints are;
- reward per step: the speed towards the goal (m/s) + 1 for staying up - 0.1 |a|^2, + 5 per goal reached; the
  episode ends when the torso leaves 0.2-1.0 m height (flipped or jumping), as gymnasium's Ant-v5 does.

The task file (`sim/tasks/ant-goal.yaml`) normalises a return so that 0 is standing still for the whole episode
and 100 is an average 1 m/s towards the goals.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from spaars_robot.envs.goal import make_goal_env

BODY_DIMS = 27
REACH_M = 0.5
GOAL_BONUS = 5.0
HEALTHY_REWARD = 1.0
CTRL_COST = 0.1
HEALTHY_Z = (0.2, 1.0)
CELL_M = 4.0


def goal_in_heading_frame(body: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """A world-frame x, y `offset` (goal minus torso) rotated into the torso's heading: the yaw of the body's
    quaternion (body[1:5] = w, x, y, z, MuJoCo's order after the torso height)."""
    w, x, y, z = body[1:5]
    yaw = np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([c * offset[0] + s * offset[1], -s * offset[0] + c * offset[1]])


def open_arena(cells: int) -> list[list[int]]:
    """A `cells` x `cells` free square with a wall border (AntMaze's map format)."""
    return [[1] * (cells + 2)] + [[1] + [0] * cells + [1] for _ in range(cells)] + [[1] * (cells + 2)]


class AntGoalEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, arena_cells: int = 5, goal_min_m: float = 1.0, goal_max_m: float = 6.0,
                 render_mode: str | None = None) -> None:
        self.inner = make_goal_env("AntMaze_Medium-v5", ["achieved_goal", "observation"], {
            "maze_map": open_arena(arena_cells), "continuing_task": True, "reset_target": False,
            "include_cfrc_ext_in_observation": False}, render_mode=render_mode)
        self.render_mode = render_mode
        self.half_extent = arena_cells * CELL_M / 2 - 1.0  # goals stay 1 m inside the walls
        self.goal_min_m, self.goal_max_m = goal_min_m, goal_max_m
        self.dt = float(self.inner.unwrapped.ant_env.dt)  # 0.05 s: 5 MuJoCo steps of 10 ms
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (BODY_DIMS + 2,), np.float64)
        self.action_space = self.inner.action_space
        self.goal = np.zeros(2)
        self._distance = 0.0
        self.goals_reached = 0

    def _draw_goal(self, xy: np.ndarray) -> None:
        for _ in range(100):  # a point in the arena at the drawn distance; near a wall some directions are out
            angle = self.np_random.uniform(-np.pi, np.pi)
            radius = self.np_random.uniform(self.goal_min_m, self.goal_max_m)
            goal = xy + radius * np.array([np.cos(angle), np.sin(angle)])
            if np.all(np.abs(goal) <= self.half_extent):
                break
        self.goal = np.clip(goal, -self.half_extent, self.half_extent)
        self._distance = float(np.linalg.norm(self.goal - xy))

    def _observe(self, flat: np.ndarray) -> np.ndarray:
        body = flat[2:]
        return np.concatenate([body, goal_in_heading_frame(body, self.goal - flat[:2])])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        flat, info = self.inner.reset(seed=seed)
        self.goals_reached = 0
        self._draw_goal(flat[:2])
        return self._observe(flat), {**info, "goal": self.goal.copy()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        flat, _, _, truncated, info = self.inner.step(action)
        xy = flat[:2]
        distance = float(np.linalg.norm(self.goal - xy))
        action = np.asarray(action, dtype=np.float64)
        reward = (self._distance - distance) / self.dt + HEALTHY_REWARD - CTRL_COST * float(action @ action)
        self._distance = distance
        if distance < REACH_M:
            reward += GOAL_BONUS
            self.goals_reached += 1
            self._draw_goal(xy)
        z = flat[2]
        terminated = not (HEALTHY_Z[0] <= z <= HEALTHY_Z[1])
        return self._observe(flat), reward, terminated, truncated, {
            **info, "goal": self.goal.copy(), "goals_reached": self.goals_reached}

    def render(self):
        return self.inner.render()

    def close(self) -> None:
        self.inner.close()
