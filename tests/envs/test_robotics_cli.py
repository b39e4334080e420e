"""kitchen and antmaze-medium end to end through the real CLI: SAC's smoke protocol, and a random dataset that
`data info` reads (the first part of issue 18: the environments; SUPE and its datasets are not built yet)."""
from __future__ import annotations

import csv
import json

import pytest

from spaars_robot.data.dataset import OfflineDataset
from tests.conftest import run_cli


@pytest.mark.parametrize("task", ["kitchen", "antmaze-medium"])
def test_sac_smoke_trains_and_evaluates_under_the_tasks_safety_spec(task, tmp_path):
    run_cli("train", "--task", task, "--algo", "sac", "--protocol", "smoke", "--runs-root", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "res"))
    run_dir = tmp_path / "runs" / f"{task}-sac-safe-smoke" / "seed0"
    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [0, 200, 400, 600]
    assert all(0.0 <= float(r["normalized_mean"]) <= 100.0 for r in rows)
    summary = json.loads(next((tmp_path / "res").glob("*.json")).read_text())
    assert summary["task"] == task and summary["safety_spec"]["file"] == f"{task}.yaml"


def test_antmaze_random_dataset_is_collected_and_read(tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    run_cli("data", "collect", "--task", "antmaze-medium", "--quality", "random", "--steps", "2000", "--root",
            str(root), "--threads", "1")
    info = run_cli("data", "info", "antmaze-medium-random", "--root", str(root)).stdout
    assert "2000" in info and "spaars/antmaze-medium-random-v0" in info
    dataset = OfflineDataset.load(root / "spaars" / "antmaze-medium-random-v0")
    assert (dataset.obs_dim, dataset.action_dim) == (31, 8)
    assert dataset.metadata["ref_max_score"] == 1.0
    # Minari rebuilds the flat env from the recorded spec (entry point spaars_robot.envs.goal:make_goal_env)
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    recorded = minari.load_dataset("spaars/antmaze-medium-random-v0", download=False)
    env = recorded.recover_environment()
    assert env.reset(seed=0)[0].shape == (31,) and env.spec.max_episode_steps == 1000
    assert recorded.observation_space.contains(next(recorded.iterate_episodes()).observations[0])


def test_spaars_on_antmaze_records_where_the_gate_chose_raw_actions(tmp_path):
    """A real SPAARS smoke run in the maze: every online step is counted in a free cell of its quarter of the
    budget, none executes raw before the transition can fire (t_min 200 > the first quarter's 150 steps), and
    `report` draws the map from the committed-style summary alone."""
    import numpy as np

    root = tmp_path / "datasets"
    run_cli("data", "collect", "--task", "antmaze-medium", "--quality", "random", "--steps", "1000", "--root",
            str(root), "--threads", "1")
    run_cli("train", "--task", "antmaze-medium", "--dataset", "antmaze-medium-random", "--algo", "spaars",
            "--protocol", "smoke", "--runs-root", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res"),
            env={"SPAARS_DATASETS": str(root)})
    (path,) = (tmp_path / "res").glob("*.json")
    gate_map = json.loads(path.read_text())["gate_map"]
    steps, raw = np.array(gate_map["steps"]), np.array(gate_map["raw"])
    assert steps.sum(axis=(1, 2)).tolist() == [150, 150, 150, 150]
    assert raw[0].sum() == 0 and (raw <= steps).all()
    walls = np.kron(np.array(gate_map["walls"]), np.ones((2, 2), dtype=int)).astype(bool)  # 2 bins per cell
    assert steps.sum(axis=0)[walls].sum() == 0, "steps counted inside walls"
    run_cli("report", str(tmp_path / "res"), "--out", str(tmp_path / "report"), "--no-render")
    assert (tmp_path / "report" / "gate_map_antmaze-medium.png").stat().st_size > 10_000
