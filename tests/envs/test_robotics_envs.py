"""FrankaKitchen and AntMaze (gymnasium-robotics 1.4.2) through the task interface: the mujoco>=3.12 fix, the flat
observation layout, and the returns the normalised scores rely on, on real MuJoCo."""
from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import yaml

from spaars_robot.config.tasks import TaskSpec, load_task, tasks_dir
from spaars_robot.envs import env_spec, make_env
from spaars_robot.envs.robotics_compat import ensure_gymnasium_robotics, fix_joint_type_comparisons
from spaars_robot.errors import ConfigError


def _raw_env(task: TaskSpec) -> gym.Env:
    """The task's gymnasium-robotics env itself (Dict observations), built the plain way."""
    ensure_gymnasium_robotics()
    return gym.make(task.env_id, disable_env_checker=True, **task.env_kwargs)  # its own checker warns on kitchen


def test_kitchen_reset_fails_without_the_fix_and_a_whole_episode_steps_with_it(monkeypatch):
    from gymnasium_robotics.utils import mujoco_utils

    kitchen = load_task("kitchen")
    ensure_gymnasium_robotics()
    with monkeypatch.context() as patch:
        patch.setattr(mujoco_utils, "mujoco", mujoco)  # the library as released, on mujoco 3.17
        assert mujoco.mjtJoint.mjJNT_HINGE != np.int32(3)  # the cause: the pybind11 enum vs numpy's int32
        with pytest.raises(AssertionError):
            env = gym.make(kitchen.env_id, **kitchen.env_kwargs)
            env.reset(seed=0)
    env = make_env(kitchen)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    steps, total, done = 0, 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 9))
        total += reward
        steps += 1
        done = terminated or truncated
    assert steps == kitchen.max_episode_steps and truncated and not terminated
    assert obs.shape == (71,) and np.isfinite(obs).all() and total == 0.0  # random joint velocities complete nothing


def test_the_fix_is_idempotent_and_changes_only_joint_types():
    from gymnasium_robotics.utils import mujoco_utils

    fix_joint_type_comparisons()
    view = mujoco_utils.mujoco
    fix_joint_type_comparisons()
    assert mujoco_utils.mujoco is view
    assert view.mjtJoint.mjJNT_FREE == np.int32(0) and view.mjtJoint.mjJNT_HINGE == np.int32(3)
    assert view.mj_name2id is mujoco.mj_name2id and view.mjtObj is mujoco.mjtObj
    assert mujoco.mjtJoint is not view.mjtJoint  # mujoco itself is untouched


@pytest.mark.parametrize("name,layout", [
    ("kitchen", [("observation", 59), ("desired_goal", 12)]),
    ("antmaze-medium", [("achieved_goal", 2), ("observation", 27), ("desired_goal", 2)]),
])
def test_the_flat_observation_is_the_dict_in_the_task_files_order(name, layout):
    task = load_task(name)
    flat_env, raw_env = make_env(task), _raw_env(task)
    flat, _ = flat_env.reset(seed=3)
    raw, _ = raw_env.reset(seed=3)
    assert flat.shape == (task.obs_dim,) == (sum(n for _, n in layout),)
    start = 0
    for key, size in layout:
        value = raw[key]
        expected = np.concatenate([value[k] for k in sorted(value)]) if isinstance(value, dict) else value
        np.testing.assert_array_equal(flat[start:start + size], expected)
        start += size
    flat2, *_ = flat_env.step(np.zeros(task.action_dim))
    raw2, *_ = raw_env.step(np.zeros(task.action_dim))
    assert flat2 is not flat and np.isfinite(flat2).all()
    # the recorded spec rebuilds the same env (Minari's recover_environment uses it)
    rebuilt = gym.make(env_spec(task))
    np.testing.assert_array_equal(rebuilt.reset(seed=3)[0], flat)


def test_kitchen_return_counts_each_completed_target_once():
    kitchen = load_task("kitchen")
    env = make_env(kitchen)
    env.reset(seed=0)
    data = env.unwrapped.data
    data.qpos[22] = -0.75  # microwave door at its goal
    data.qpos[17:19] = [-0.69, -0.05]  # light switch on
    _, reward, terminated, _, info = env.step(np.zeros(9))
    assert reward == 2.0 and not terminated
    assert sorted(info["episode_task_completions"]) == ["light switch", "microwave"]
    _, reward, *_ = env.step(np.zeros(9))
    assert reward == 0.0  # already counted
    assert kitchen.normalized_score(2.0) == pytest.approx(50.0) and kitchen.normalized_score(4.0) == 100.0


def test_antmaze_success_ends_the_episode_with_return_one():
    task = load_task("antmaze-medium")
    env = make_env(task)
    obs, _ = env.reset(seed=0)
    assert np.linalg.norm(obs[:2] - obs[-2:]) > 10  # D4RL's medium start and goal cells, far apart
    env.unwrapped.ant_env.data.qpos[:2] = obs[-2:]  # torso onto the goal
    obs, reward, terminated, truncated, _ = env.step(np.zeros(8))
    assert reward == 1.0 and terminated and not truncated
    assert task.normalized_score(1.0) == 100.0 and task.normalized_score(0.0) == 0.0
    assert not task.termination_is_failure and load_task("hopper").termination_is_failure


def test_antmaze_map_is_the_medium_maze_with_d4rl_s_evaluation_start_and_goal():
    from gymnasium_robotics.envs.maze.maps import MEDIUM_MAZE

    maze = load_task("antmaze-medium").env_kwargs["maze_map"]
    assert maze[1][1] == "r" and maze[6][6] == "g"
    assert [[0 if c in ("r", "g") else c for c in row] for row in maze] == MEDIUM_MAZE


def test_a_score_the_env_cannot_mean_is_refused(tmp_path):
    raw = yaml.safe_load((tasks_dir() / "kitchen.yaml").read_text())
    raw["env_kwargs"]["tasks_to_complete"] = ["microwave", "kettle"]  # 2 targets, ref_max_score still 4
    (tmp_path / "k.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="ref_max_score = their number"):
        load_task(tmp_path / "k.yaml")
    raw = yaml.safe_load((tasks_dir() / "antmaze-medium.yaml").read_text())
    raw["env_kwargs"]["continuing_task"] = True  # the return would count steps at the goal
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="continuing_task false"):
        load_task(tmp_path / "a.yaml")
