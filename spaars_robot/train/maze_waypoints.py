"""Drive a goal-reaching Ant through a maze along waypoints: the behaviour of antmaze-*-diverse, D4RL's recipe.

D4RL's antmaze data came from a goal-reaching Ant policy (trained in the open) steered by a planner: each episode
draws a start and a goal cell, and at every step the policy is given the next cell on the shortest path as its
goal, then the goal itself once in the goal cell. Here the walker is the scripted gait of train/scripted_ant.py
(or a kept SAC actor of `sim/tasks/ant-goal.yaml`, `ActorWalker`), the planner a breadth-first search over the
task's map (`envs/maze.MazeGeometry`), and the episode's cells are drawn from the episode's seeded generator and
passed to AntMaze's reset, so the data is "diverse" (random starts and goals) and an episode still depends on its
seed alone.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from spaars_robot.config.tasks import TaskSpec
from spaars_robot.envs.ant_goal import BODY_DIMS, goal_in_heading_frame
from spaars_robot.envs.maze import MazeGeometry
from spaars_robot.errors import SpaarsError
from spaars_robot.train.collect import Behaviour

GOAL_TASK = "ant-goal"


class GoalWalker(Protocol):
    """Walks the Ant towards a goal given in its heading frame; every random draw from the episode's generator."""

    def begin_episode(self, generator: torch.Generator) -> None: ...

    def act(self, body: np.ndarray, goal_heading_frame: np.ndarray, generator: torch.Generator) -> np.ndarray: ...


class ActorWalker:
    """A kept SAC actor of the `ant-goal` task (observation: body 27 + heading-frame goal 2) as a GoalWalker."""

    def __init__(self, actor: torch.nn.Module) -> None:
        self.actor = actor

    def begin_episode(self, generator: torch.Generator) -> None:
        return None

    def act(self, body: np.ndarray, goal_heading_frame: np.ndarray, generator: torch.Generator) -> np.ndarray:
        with torch.no_grad():
            x = torch.as_tensor(np.concatenate([body, goal_heading_frame]), dtype=torch.float32).unsqueeze(0)
            return self.actor.sample(x, generator)[0][0].numpy()


class MazeWaypointBehaviour(Behaviour):
    """A behaviour (train/collect.Behaviour) for AntMaze tasks whose flat observation is [x, y, body 27, goal x, y]."""

    def __init__(self, task: TaskSpec, walker: GoalWalker) -> None:
        self.maze, self.walker = self.maze_of(task), walker
        self.free = self.maze.free_cells()
        self._next_cell: dict[tuple[tuple[int, int], tuple[int, int]], tuple[int, int] | None] = {}

    @staticmethod
    def maze_of(task: TaskSpec) -> MazeGeometry:
        """The task's maze, or a one-line refusal for a task this behaviour cannot drive."""
        maze = MazeGeometry.of_task(task)
        keys = task.observation_keys or []
        if maze is None or keys != ["achieved_goal", "observation", "desired_goal"] or task.obs_dim != BODY_DIMS + 4:
            raise SpaarsError(f"quality 'diverse' drives an Ant through a maze: task {task.name!r} needs a `map` and "
                              f"the observation [achieved_goal, observation, desired_goal] ({BODY_DIMS + 4} dims)")
        return maze

    def reset_options(self, generator: torch.Generator) -> dict:
        """The episode's start and goal cells, distinct free cells drawn uniformly (AntMaze jitters both)."""
        start, goal = torch.randperm(len(self.free), generator=generator)[:2].tolist()
        return {"reset_cell": np.array(self.free[start]), "goal_cell": np.array(self.free[goal])}

    def waypoint(self, obs: np.ndarray) -> np.ndarray:
        """Where the policy is sent now: the next cell's centre on the shortest path, or the goal in its cell."""
        xy, goal = obs[:2], obs[-2:]
        cells = self.maze.cell_of(xy), self.maze.cell_of(goal)
        if cells not in self._next_cell:  # a breadth-first search per step was ~10 % of a rollout's time
            route = self.maze.path(*cells)
            self._next_cell[cells] = None if len(route) <= 1 else route[1]
        step = self._next_cell[cells]
        return goal if step is None else self.maze.cell_centre(*step)

    def begin_episode(self, generator: torch.Generator) -> None:
        self.walker.begin_episode(generator)

    def act(self, obs: np.ndarray, generator: torch.Generator) -> np.ndarray:
        body = obs[2:2 + BODY_DIMS]
        return self.walker.act(body, goal_in_heading_frame(body, self.waypoint(obs) - obs[:2]), generator)
