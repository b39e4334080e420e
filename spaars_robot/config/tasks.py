"""Task specs: which simulator, which env, D4RL reference scores and dataset quality targets.

Tasks are YAML files under `sim/tasks/`; `load_task("hopper")` or `load_task("path/to.yaml")`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from spaars_robot.config.loading import DATA_ROOT_ENV, data_root, load_yaml_model
from spaars_robot.config.ranges import ranges_problem
from spaars_robot.errors import ConfigError


class QualityTarget(BaseModel):
    """How good a behaviour policy must be for a dataset of this quality (D4RL-normalised scores)."""

    model_config = ConfigDict(extra="forbid")
    target_normalized: float | None = Field(
        description="Deterministic-evaluation score at which behaviour-policy training stops; "
        "None means no training (uniform random actions)."
    )
    band: tuple[float, float] = Field(description="Range the collected dataset's mean score must lie in.")
    steps: int | None = Field(
        None, gt=0, description="Transitions in D4RL's dataset of this task and quality: what `data collect` rolls "
        "out when --steps is not given, so the documented recipe makes the dataset the benchmarks were measured on "
        "(kitchen-mixed: 140,000, D4RL's 136,950 as whole 280-step episodes). None: 1,000,000, D4RL's locomotion "
        "size.")

    @model_validator(mode="after")
    def _band_ordered(self) -> QualityTarget:
        if self.band[0] >= self.band[1]:
            raise ValueError(f"band must be [low, high] with low < high, got {list(self.band)}")
        return self


DEFAULT_DATASET_STEPS = 1_000_000


def default_dataset_steps(task: TaskSpec, quality: str) -> int:
    """The dataset size `data collect` makes when not told: the quality's `steps`, else D4RL's locomotion 1M.

    medium-replay and medium-expert are made from the medium run, so they read medium's entry."""
    base = "medium" if quality in ("medium-replay", "medium-expert") else quality
    target = task.quality.get(base)  # type: ignore[call-overload]
    return target.steps if target is not None and target.steps is not None else DEFAULT_DATASET_STEPS


class MapSpec(BaseModel):
    """Where the agent is, for tasks with a maze (`env_kwargs.maze_map`): what the gate-decision map is drawn on."""

    model_config = ConfigDict(extra="forbid")
    position_obs: tuple[int, int] = Field(description="Indices of the agent's x and y (metres) in the flat "
                                          "observation")
    cell_size_m: float = Field(gt=0, description="Side of one maze cell in metres (gymnasium-robotics' "
                               "maze_size_scaling: 4 for AntMaze)")


class TaskSpec(BaseModel):
    """One control task, identified by `name`; the single source of its reference scores."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    backend: Literal["gymnasium", "dm_control"]
    env_id: str = Field(description="gymnasium id (Hopper-v5) or dm-control 'domain-task' (walker-walk)")
    ref_min_score: float = Field(description="D4RL random-policy reference return")
    ref_max_score: float = Field(description="D4RL expert reference return")
    max_episode_steps: int = Field(gt=0, le=100_000)
    obs_dim: int = Field(gt=0)
    action_dim: int = Field(gt=0)
    control_rate_hz: float = Field(gt=0, description="Policy steps per simulated second")
    quality: dict[Literal["random", "medium", "expert", "mixed", "diverse"], QualityTarget]
    observation_names: list[str] | None = Field(
        None, description="One name per observation element, in order; an exported bundle's manifest and the "
        "controller's hello carry them. None: generic obs_0, obs_1, ...")
    action_names: list[str] | None = Field(
        None, description="One name per action element, in order. None: generic action_0, action_1, ...")
    env_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for the gymnasium env's constructor (gymnasium "
        "backend only), e.g. FrankaKitchen's tasks_to_complete; recorded in datasets' env_spec.")
    observation_keys: list[str] | None = Field(
        None, min_length=1, description="Goal-conditioned (Dict-observation) gymnasium-robotics envs: the keys "
        "concatenated, in this order, into the flat observation (each flattened as gymnasium.spaces.flatten "
        "does; envs/goal.py). None: the env already observes a Box.")
    network_observation: list[tuple[int, int]] | None = Field(
        None, description="Half-open [start, stop) ranges of the observation the networks read when a run does not "
        "say otherwise (`pretrain.observation_dims`); the rest is zeroed after normalisation. Kitchen reads joint "
        "and object positions only, as SUPE does. None: every dim.")
    map: MapSpec | None = Field(
        None, description="Maze tasks: where the agent's position is in the observation and the cell size, so "
        "training records where the gate chose raw actions and `report` draws it on the maze (envs/maze.py).")
    score: Literal["return", "subtasks", "success"] = Field(
        "return", description="What the normalised score measures. return: D4RL's normalisation of the episode "
        "return (locomotion). subtasks: the return counts completed target subtasks, so the score is 100 x "
        "completed / ref_max_score (ref_max_score = number of targets). success: the return is 1 when the "
        "episode reached its goal (it terminates there), else 0, so the score is 100 x success. All three are the "
        "one formula in normalized_score; the validator checks that the task's env makes them mean that.")

    @model_validator(mode="after")
    def _scores_ordered(self) -> TaskSpec:
        if self.ref_max_score <= self.ref_min_score:
            raise ValueError("ref_max_score must be greater than ref_min_score")
        return self

    @model_validator(mode="after")
    def _names_fit(self) -> TaskSpec:
        for field, dim in (("observation_names", self.obs_dim), ("action_names", self.action_dim)):
            names = getattr(self, field)
            if names is not None and (len(names) != dim or len(set(names)) != dim):
                raise ValueError(f"{field} must be {dim} distinct names, got {len(names)} ({len(set(names))} distinct)")
            if names is not None and any("," in name or not name for name in names):
                raise ValueError(f"{field}: names must be non-empty and without commas (ONNX metadata joins them)")
        return self

    @model_validator(mode="after")
    def _score_fits(self) -> TaskSpec:
        if (self.env_kwargs or self.observation_keys) and self.backend != "gymnasium":
            raise ValueError("env_kwargs and observation_keys apply to the gymnasium backend only")
        if self.score == "return":
            return self
        if self.ref_min_score != 0.0:
            raise ValueError(f"score: {self.score} needs ref_min_score 0 (none reached), got {self.ref_min_score}")
        if self.score == "subtasks":
            targets = self.env_kwargs.get("tasks_to_complete")
            if not targets or self.ref_max_score != len(targets):
                raise ValueError("score: subtasks needs env_kwargs.tasks_to_complete and ref_max_score = their "
                                 f"number, got {targets} and {self.ref_max_score}")
            if self.env_kwargs.get("remove_task_when_completed", True) is not True:
                raise ValueError("score: subtasks needs remove_task_when_completed (each subtask rewarded once)")
        if self.score == "success":
            if self.ref_max_score != 1.0 or self.env_kwargs.get("continuing_task") is not False:
                raise ValueError("score: success needs ref_max_score 1 and env_kwargs.continuing_task false (an "
                                 "episode ends at its goal with return 1; a continuing task counts steps there)")
        return self

    @model_validator(mode="after")
    def _network_observation_fits(self) -> TaskSpec:
        problem = None if self.network_observation is None else ranges_problem(self.network_observation, self.obs_dim)
        if problem:
            raise ValueError(f"network_observation {problem}")
        return self

    @model_validator(mode="after")
    def _map_fits(self) -> TaskSpec:
        if self.map is None:
            return self
        rows = self.env_kwargs.get("maze_map")
        if not rows or not all(isinstance(row, list) and len(row) == len(rows[0]) for row in rows):
            raise ValueError("map needs env_kwargs.maze_map as a rectangular list of rows")
        if any(not 0 <= i < self.obs_dim for i in self.map.position_obs):
            raise ValueError(f"map.position_obs {list(self.map.position_obs)} must index the {self.obs_dim}-dim "
                             "observation")
        return self

    @property
    def termination_is_failure(self) -> bool:
        """Whether `terminated` means a fall (locomotion) rather than a reached goal (subtasks, success tasks)."""
        return self.score == "return"

    def names(self) -> tuple[list[str], list[str]]:
        """(observation names, action names): the task's, else the generic ones bundles used before tasks had any."""
        return (self.observation_names or [f"obs_{i}" for i in range(self.obs_dim)],
                self.action_names or [f"action_{i}" for i in range(self.action_dim)])

    def normalized_score(self, episode_return: float) -> float:
        """D4RL normalisation: 0 = random policy, 100 = expert (Fu et al. 2020, `get_normalized_score` x 100).

        Also D4RL's for its kitchen (ref 0..4) and antmaze (ref 0..1) tasks: with `score: subtasks` this is 100 x
        completed / targets, with `score: success` 100 x success, so a kitchen-mixed "0.825" is 82.5 here.
        """
        return 100.0 * (episode_return - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)


def tasks_dir() -> Path:
    return data_root() / "sim" / "tasks"


def available_tasks() -> list[str]:
    return sorted(p.stem for p in tasks_dir().glob("*.yaml"))


def load_task(name_or_path: str | Path) -> TaskSpec:
    """Resolve a task by short name (`hopper`) or by a YAML path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = tasks_dir() / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown task {name_or_path!r}; known tasks: {', '.join(available_tasks())} "
                              f"(looked in {tasks_dir()}; ${DATA_ROOT_ENV} overrides the data root)")
    return load_yaml_model(path, TaskSpec)
