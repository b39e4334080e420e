"""Task YAML validation: every failure names the file, the field path and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spaars_robot.config.tasks import TaskSpec, available_tasks, load_task, tasks_dir
from spaars_robot.envs import make_env
from spaars_robot.errors import ConfigError


def hopper_raw() -> dict:
    return yaml.safe_load((tasks_dir() / "hopper.yaml").read_text())


def write(tmp_path: Path, raw: dict | str, name: str = "task.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def test_shipped_tasks_validate_and_match_their_envs() -> None:
    names = available_tasks()
    assert {"hopper", "walker2d", "halfcheetah", "ant", "dmc-walker-walk"} <= set(names)
    for name in names:
        task = load_task(name)
        env = make_env(task)  # raises ConfigError if the YAML's dims disagree with the simulator
        env.close()
        assert task.name == name


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: hopper\nbackend: [gymnasium\n")
    with pytest.raises(ConfigError) as err:
        load_task(path)
    message = str(err.value)
    assert str(path) in message and "not valid YAML" in message and "line 3" in message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level, got list"):
        load_task(path)


def test_wrong_type_names_field_and_value(tmp_path: Path) -> None:
    raw = hopper_raw()
    raw["max_episode_steps"] = "a thousand"
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as err:
        load_task(path)
    message = str(err.value)
    assert message.startswith(f"{path}: max_episode_steps: ")
    assert "valid integer" in message and "'a thousand'" in message


def test_nested_field_path_is_reported(tmp_path: Path) -> None:
    raw = hopper_raw()
    raw["quality"]["medium"]["band"] = [60.0, "high"]
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError, match=r"quality\.medium\.band\.1: Input should be a valid number"):
        load_task(path)


def test_missing_field(tmp_path: Path) -> None:
    raw = hopper_raw()
    del raw["ref_max_score"]
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError, match=rf"^{path}: ref_max_score: Field required$"):
        load_task(path)


def test_extra_field_is_rejected(tmp_path: Path) -> None:
    raw = hopper_raw()
    raw["ref_max_scor"] = 3234.3  # a typo must not be silently ignored
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError, match=r"ref_max_scor: Extra inputs are not permitted"):
        load_task(path)


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    raw = hopper_raw()
    raw["obs_dim"] = 0
    raw["backend"] = "bullet"
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as err:
        load_task(path)
    message = str(err.value)
    assert "obs_dim: Input should be greater than 0" in message
    assert "backend: Input should be 'gymnasium' or 'dm_control'" in message


def test_cross_field_rules(tmp_path: Path) -> None:
    raw = hopper_raw()
    raw["ref_min_score"], raw["ref_max_score"] = 10.0, 5.0
    with pytest.raises(ConfigError, match="ref_max_score must be greater than ref_min_score"):
        load_task(write(tmp_path, raw))
    raw = hopper_raw()
    raw["quality"]["medium"]["band"] = [60.0, 20.0]
    with pytest.raises(ConfigError, match=r"quality\.medium: .*low < high"):
        load_task(write(tmp_path, raw))


def test_unknown_task_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown task 'hoper'; known tasks: .*hopper"):
        load_task("hoper")
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=rf"{missing}: cannot read config"):
        load_task(missing)


def test_dims_disagreeing_with_the_simulator(tmp_path: Path) -> None:
    raw = hopper_raw()
    raw["obs_dim"] = 12
    del raw["observation_names"]  # 11 names would refuse obs_dim 12 already; this is the simulator's check
    task = TaskSpec.model_validate(raw)
    with pytest.raises(ConfigError, match="config says obs_dim=12, action_dim=3 but Hopper-v5 has 11, 3"):
        make_env(task)


def test_collect_defaults_to_the_task_and_quality_d4rl_size(tmp_path: Path) -> None:
    """The documented recipe (`data collect --task kitchen --quality mixed`, no --steps) must make the dataset the
    benchmarks were measured on (D4RL kitchen-mixed's 500 x 280 steps), not 1M steps and two hours of scripting."""
    from spaars_robot.config.tasks import DEFAULT_DATASET_STEPS, default_dataset_steps
    from spaars_robot.data.summary import summarize
    from tests.conftest import run_cli

    kitchen = load_task("kitchen")
    assert default_dataset_steps(kitchen, "mixed") == 140_000 == 500 * kitchen.max_episode_steps
    hopper = load_task("hopper")
    for quality in ("random", "medium", "medium-replay", "medium-expert", "expert"):
        assert default_dataset_steps(hopper, quality) == DEFAULT_DATASET_STEPS == 1_000_000
    raw = hopper_raw()
    raw["quality"]["random"]["steps"] = 0
    with pytest.raises(ConfigError, match="quality.random.steps"):
        load_task(write(tmp_path, raw, "hopper.yaml"))
    # through the CLI: a task file whose random quality says 700 steps, collected without --steps
    raw["quality"]["random"]["steps"] = 700
    task_file = write(tmp_path, raw, "hopper.yaml")
    run_cli("data", "collect", "--task", str(task_file), "--quality", "random", "--root", str(tmp_path / "d"),
            "--threads", "1")
    assert summarize(tmp_path / "d" / "spaars" / "hopper-random-v0").steps == 700
