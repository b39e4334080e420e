"""The maze map of gate decisions (paper figure 3): geometry against gymnasium-robotics' own, the recorder's counts
and checkpoint, the task file's checks, and the report's sum over seeds."""
from __future__ import annotations

import json

import numpy as np
import pytest

from spaars_robot.config.tasks import TaskSpec, load_task
from spaars_robot.data.files import atomic_torch_save, safe_torch_load
from spaars_robot.envs.maze import MazeGeometry
from spaars_robot.train.gate_map import GateMapRecorder
from tests.conftest import REPO


@pytest.fixture(scope="module")
def maze() -> MazeGeometry:
    return MazeGeometry.of_task(load_task("antmaze-medium"))


def test_cell_centres_match_gymnasium_robotics(maze):
    """Every cell centre the env computes (`Maze.cell_rowcol_to_xy`) falls in that cell's bins, whatever the grid."""
    from spaars_robot.envs.make import make_env

    env = make_env(load_task("antmaze-medium"))
    try:
        real = env.unwrapped.maze
        assert real.maze_size_scaling == maze.cell_size_m and np.array(real.maze_map).shape == maze.shape
        for row in range(maze.shape[0]):
            for col in range(maze.shape[1]):
                xy = real.cell_rowcol_to_xy(np.array([row, col]))
                assert bool(maze.walls[row, col]) == (real.maze_map[row][col] == 1)
                for per_cell in (1, 2, 3):
                    r, c = maze.bin_indices(xy, per_cell)
                    assert (r[0] // per_cell, c[0] // per_cell) == (row, col)
    finally:
        env.close()


def test_locomotion_tasks_have_no_map():
    assert MazeGeometry.of_task(load_task("hopper")) is None


def test_recorder_counts_per_quarter_and_place_and_survives_a_checkpoint(maze, tmp_path):
    rec = GateMapRecorder(maze, (0, 1), env_steps=8)
    start, far = np.array([-10.0, 10.0, 0.5]), np.array([10.0, -10.0, 0.5])  # cells (1, 1) and (6, 6)
    sources = ["latent", "latent", "latent", "raw", "raw", "latent", "raw", "raw"]
    for step, source in enumerate(sources, start=1):
        rec.add(step, start if step <= 4 else far, source)
    assert rec.steps.sum(axis=(1, 2)).tolist() == [2, 2, 2, 2]
    assert rec.raw.sum(axis=(1, 2)).tolist() == [0, 1, 1, 2]
    assert rec.steps[0, 2:4, 2:4].sum() == 2 and rec.steps[3, 12:14, 12:14].sum() == 2
    rec.add(9, np.array([99.0, -99.0, 0.0]), "raw")  # past the budget, off the map: last period, corner bin
    assert rec.steps[3, -1, -1] == 1
    again = GateMapRecorder(maze, (0, 1), env_steps=8)
    atomic_torch_save(tmp_path / "checkpoint.pt", {"gate_map": rec.state_dict()})  # as the runner writes it
    again.load_state_dict(safe_torch_load(tmp_path / "checkpoint.pt")["gate_map"])  # and reads it (weights only)
    assert (again.steps == rec.steps).all() and (again.raw == rec.raw).all()
    with pytest.raises(ValueError, match="shape"):
        GateMapRecorder(maze, (0, 1), env_steps=8, per_cell=3).load_state_dict(rec.state_dict())
    summary = json.loads(json.dumps(rec.summary()))  # what the committed summary carries survives JSON
    assert np.array(summary["steps"]).shape == (4, 16, 16) and summary["walls"][0] == [1] * 8


def test_task_file_map_is_checked():
    spec = load_task("antmaze-medium").model_dump()
    with pytest.raises(ValueError, match="position_obs"):
        TaskSpec.model_validate({**spec, "map": {"position_obs": [0, 31], "cell_size_m": 4.0}})
    with pytest.raises(ValueError, match="maze_map"):
        TaskSpec.model_validate({**spec, "env_kwargs": {**spec["env_kwargs"], "maze_map": None}})


def _summary(seed: int, steps: np.ndarray, raw: np.ndarray, walls: list) -> dict:
    """A committed SPAARS summary moved onto the maze, with a hand-made gate map."""
    template = json.loads((REPO / "benchmarks" / "results" / "train" / "hopper_spaars_short_seed0.json").read_text())
    return {**template, "task": "antmaze-medium", "seed": seed, "dataset": "",
            "gate_map": {"walls": walls, "cell_size_m": 4.0, "bins_per_cell": 1, "env_steps": 100,
                         "steps": steps.tolist(), "raw": raw.tolist()}}


def test_report_sums_seeds_and_draws_one_map_per_maze_task(tmp_path, maze):
    from spaars_robot.report.build import build_report

    walls = maze.walls.astype(int).tolist()
    steps, raw = np.zeros((4, 8, 8), int), np.zeros((4, 8, 8), int)
    steps[:, 1, 1], raw[3, 1, 1] = 10, 7
    results = tmp_path / "results"
    results.mkdir()
    for seed in (0, 1):
        (results / f"antmaze-medium_spaars_short_seed{seed}.json").write_text(
            json.dumps(_summary(seed, steps, raw, walls)))
    report = build_report([results], tmp_path / "out", "test", render=False)
    drawn = dict((path.name, caption) for caption, path in report.figures)
    assert "gate_map_antmaze-medium.png" in drawn and (tmp_path / "out" / "gate_map_antmaze-medium.png").stat().st_size

    from spaars_robot.report import maze_figure, tables
    from spaars_robot.report.runs import find_runs

    (summed,) = maze_figure.summed_maps(tables.group_runs(find_runs([results])), ["spaars"]).values()
    assert summed["spaars"]["seeds"] == 2 and summed["spaars"]["steps"][3, 1, 1] == 20
    assert summed["spaars"]["raw"][3, 1, 1] == 14
    other = np.array(walls)
    other[1, 1] = 1
    (results / "antmaze-medium_spaars_short_seed2.json").write_text(
        json.dumps(_summary(2, steps, raw, other.tolist())))
    with pytest.raises(ValueError, match="different mazes"):
        maze_figure.summed_maps(tables.group_runs(find_runs([results])), ["spaars"])
