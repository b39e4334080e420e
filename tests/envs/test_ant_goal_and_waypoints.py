"""What antmaze-*-diverse is made with (issue 18): the goal-reaching Ant env, the scripted gait that walks to goals,
the maze's shortest paths, and the waypoint follower that steers the walker between random start and goal cells."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spaars_robot.config.tasks import load_task
from spaars_robot.envs import make_env
from spaars_robot.envs.ant_goal import GOAL_BONUS, REACH_M, goal_in_heading_frame
from spaars_robot.envs.maze import MazeGeometry
from spaars_robot.errors import SpaarsError
from spaars_robot.train.maze_waypoints import ActorWalker, MazeWaypointBehaviour
from spaars_robot.train.scripted_ant import ScriptedAntWalker


@pytest.fixture(scope="module")
def maze() -> MazeGeometry:
    return MazeGeometry.of_task(load_task("antmaze-medium"))


def test_ant_goal_rewards_progress_and_chains_goals():
    env = make_env(load_task("ant-goal"))
    obs, info = env.reset(seed=0)
    inner = env.unwrapped
    ant = inner.inner.unwrapped.ant_env
    xy = ant.data.qpos[:2].copy()
    offset = info["goal"] - xy  # the goal relative to the torso, in its heading frame: same length, yaw undone
    np.testing.assert_allclose(np.linalg.norm(obs[-2:]), np.linalg.norm(offset), atol=1e-6)
    np.testing.assert_allclose(obs[-2:], goal_in_heading_frame(obs[:27], offset), atol=1e-9)
    assert obs.shape == (29,) and obs[0] == pytest.approx(ant.data.qpos[2])
    ant.data.qpos[:2] = xy + 0.3 * (info["goal"] - xy)  # carried a third of the way towards the goal
    _, reward, terminated, _, _ = env.step(np.zeros(8))
    assert reward > 5.0 and not terminated  # ~0.3 x distance in one 0.05 s step: a high speed towards the goal
    goal = info["goal"]
    ant.data.qpos[:2] = goal + 0.1 * REACH_M  # at the goal
    _, reward, _, _, step_info = env.step(np.zeros(8))
    assert step_info["goals_reached"] == 1 and reward > GOAL_BONUS - 5.0
    assert not np.allclose(step_info["goal"], goal)  # a new goal, at once
    ant.data.qpos[2] = 1.5  # torso thrown 1.5 m high: out of the healthy range
    assert env.step(np.zeros(8))[2]
    env.close()


def test_shortest_path_through_the_medium_maze(maze):
    route = maze.path((1, 1), (6, 6))  # D4RL's evaluation start and goal cells
    assert route[0] == (1, 1) and route[-1] == (6, 6) and len(route) == 11
    assert all(not maze.walls[cell] for cell in route)
    assert all(abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 for a, b in zip(route, route[1:]))
    with pytest.raises(ValueError, match="wall"):
        maze.path((1, 1), (0, 0))
    np.testing.assert_allclose(maze.cell_centre(1, 1), [-10.0, 10.0])  # gymnasium-robotics' cell_rowcol_to_xy
    assert maze.cell_of(np.array([-10.0, 10.0])) == (1, 1)


def test_waypoint_follower_draws_cells_and_steers_along_the_path(maze):
    task = load_task("antmaze-medium")
    behaviour = MazeWaypointBehaviour(task, ScriptedAntWalker())
    generator = torch.Generator().manual_seed(0)
    draws = [behaviour.reset_options(generator) for _ in range(200)]
    assert all(not maze.walls[tuple(d["reset_cell"])] and not maze.walls[tuple(d["goal_cell"])] for d in draws)
    assert all(tuple(d["reset_cell"]) != tuple(d["goal_cell"]) for d in draws)
    assert len({tuple(d["goal_cell"]) for d in draws}) == len(maze.free_cells())  # every free cell is a goal
    obs = np.zeros(31)
    obs[:2], obs[-2:] = maze.cell_centre(1, 1) + 0.5, maze.cell_centre(6, 6)
    np.testing.assert_allclose(behaviour.waypoint(obs), maze.cell_centre(*maze.path((1, 1), (6, 6))[1]))  # next cell
    obs[:2] = maze.cell_centre(6, 6) + 1.0
    np.testing.assert_allclose(behaviour.waypoint(obs), obs[-2:])  # in the goal's cell: the goal itself
    env = make_env(task)  # the options really place the ant and the goal
    flat, _ = env.reset(seed=3, options=draws[0])
    assert maze.cell_of(flat[:2]) == tuple(draws[0]["reset_cell"]) and maze.cell_of(flat[-2:]) == tuple(draws[0]["goal_cell"])
    env.close()
    with pytest.raises(SpaarsError, match="maze"):
        MazeWaypointBehaviour(load_task("kitchen"), ScriptedAntWalker())


def test_the_goal_is_seen_from_the_torsos_heading():
    body = np.zeros(27)
    for yaw in (0.0, np.pi / 2, -2.5):  # torso turned by yaw about z: quaternion (cos yaw/2, 0, 0, sin yaw/2)
        body[1:5] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        ahead = 3.0 * np.array([np.cos(yaw), np.sin(yaw)])  # a goal 3 m straight ahead of the torso
        np.testing.assert_allclose(goal_in_heading_frame(body, ahead), [3.0, 0.0], atol=1e-9)
        left = 2.0 * np.array([np.cos(yaw + np.pi / 2), np.sin(yaw + np.pi / 2)])
        np.testing.assert_allclose(goal_in_heading_frame(body, left), [0.0, 2.0], atol=1e-9)


def test_the_scripted_gait_walks_to_goals_without_falling():
    """On the open arena's chained goals (1-6 m away, any bearing), with the data's action noise, the gait reaches
    goals in every episode and stays up: a gait that stumbles, drifts or cannot turn reaches none in 25 s."""
    env = make_env(load_task("ant-goal"))
    reached = []
    for seed in range(3):
        obs, _ = env.reset(seed=100 + seed)
        walker, generator = ScriptedAntWalker(), torch.Generator().manual_seed(seed)
        walker.begin_episode(generator)
        for _ in range(500):
            obs, _, terminated, _, info = env.step(walker.act(obs[:27], obs[27:], generator))
            assert not terminated
        reached.append(info["goals_reached"])
    env.close()
    assert min(reached) >= 1 and sum(reached) >= 4, reached


def test_the_scripted_gait_turns_towards_the_goal_with_hysteresis():
    walker = ScriptedAntWalker(action_noise=0.0)
    assert walker.steer(np.array([3.0, 0.2])) == "forward"  # 0.07 rad off: keep walking
    assert walker.steer(np.array([1.0, 1.0])) == "left"  # 0.79 rad to the left
    assert walker.steer(np.array([3.0, 0.6])) == "left"  # 0.2 rad: still turning (hysteresis)
    assert walker.steer(np.array([3.0, 0.1])) == "forward"
    assert walker.steer(np.array([-1.0, -0.1])) == "right"  # behind and slightly right
    body = np.zeros(27)
    body[5:13] = [0.0, 0.87, 0.0, -0.87, 0.0, -0.87, 0.0, 0.87]
    action = walker.act(body, np.array([5.0, 0.0]), torch.Generator().manual_seed(0))
    assert action.shape == (8,) and np.all(np.abs(action) <= 1.0) and np.any(action != 0.0)
    with pytest.raises(ValueError, match="turn_off"):
        ScriptedAntWalker(turn_on=0.1, turn_off=0.2)


def test_a_kept_actor_walks_the_maze_as_the_script_does():
    """ActorWalker hands the actor [body, heading-frame goal], the observation of the ant-goal task it learnt on."""
    seen = []

    class Recorder(torch.nn.Module):
        def sample(self, x, generator):
            seen.append(x)
            return torch.zeros(1, 8), None

    action = ActorWalker(Recorder()).act(np.arange(27.0), np.array([1.0, 2.0]), torch.Generator())
    assert action.shape == (8,) and seen[0].shape == (1, 29) and seen[0][0, -2:].tolist() == [1.0, 2.0]


def test_building_a_maze_env_leaves_no_model_file_behind():
    """gymnasium-robotics writes /tmp/ant_maze<time>.xml for every maze env and never removes it; ours do, and the
    env still runs from the model MuJoCo already parsed."""
    import os

    for name in ("antmaze-medium", "ant-goal"):
        env = make_env(load_task(name))
        inner = env.unwrapped if name == "antmaze-medium" else env.unwrapped.inner.unwrapped
        assert inner.tmp_xml_file_path.endswith(".xml") and not os.path.exists(inner.tmp_xml_file_path)
        env.reset(seed=0)
        assert np.all(np.isfinite(env.step(np.zeros(8))[0]))
        env.close()
