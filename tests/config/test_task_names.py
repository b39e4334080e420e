"""Task element names: what `sim/tasks/*.yaml` declares is what the MuJoCo model has, and a wrong list is refused.

The names travel into every exported bundle's manifest and ONNX metadata and into the controller's hello,
where the server compares them; a list that drifts from the simulator would name the robot's signals wrongly.
"""
from __future__ import annotations

import mujoco
import pytest
import yaml

from spaars_robot.config.tasks import TaskSpec, available_tasks, load_task, tasks_dir
from spaars_robot.envs.make import make_env
from spaars_robot.errors import ConfigError


def model_names(task: TaskSpec) -> tuple[list[str], list[str]]:
    """Names from the model: joint positions without the first (rootx, excluded from gymnasium's observation),
    then every joint velocity; actions are the actuated joints' torques."""
    env = make_env(task)
    try:
        model = env.unwrapped.model
        joints = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, i) for i in range(model.njnt)]
        assert model.nq == model.nv == len(joints), "names assume one degree of freedom per joint"
        actions = [f"{joints[model.actuator_trnid[i, 0]]}_torque" for i in range(model.nu)]
        return [f"{j}_pos" for j in joints[1:]] + [f"{j}_vel" for j in joints], actions
    finally:
        env.close()


NAMED = [name for name in available_tasks() if load_task(name).observation_names is not None]


def test_the_gymnasium_locomotion_tasks_are_named() -> None:
    assert {"hopper", "walker2d", "halfcheetah"} <= set(NAMED)


@pytest.mark.parametrize("name", NAMED)
def test_task_names_match_the_mujoco_model(name: str) -> None:
    task = load_task(name)
    assert task.names() == model_names(task)


def test_unnamed_task_gets_generic_names() -> None:
    raw = yaml.safe_load((tasks_dir() / "hopper.yaml").read_text())
    del raw["observation_names"], raw["action_names"]
    assert TaskSpec.model_validate(raw).names() == ([f"obs_{i}" for i in range(11)], ["action_0", "action_1",
                                                                                      "action_2"])


@pytest.mark.parametrize(("field", "names", "problem"), [
    ("observation_names", ["a"] * 11, "11 distinct names"),
    ("action_names", ["a", "b"], "3 distinct names"),
    ("action_names", ["a", "b", "c,d"], "without commas"),
])
def test_wrong_name_lists_are_refused(tmp_path, field: str, names: list[str], problem: str) -> None:
    raw = yaml.safe_load((tasks_dir() / "hopper.yaml").read_text())
    raw[field] = names
    path = tmp_path / "hopper.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=problem):
        load_task(path)
