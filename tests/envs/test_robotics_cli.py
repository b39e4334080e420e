"""kitchen and antmaze-medium end to end through the real CLI: datasets that `data info` and Minari read (kitchen's
scripted `mixed`, antmaze's waypoint-driven `diverse`), and SUPE and SPAARS-SUPE smoke runs on both tasks under the
task's safety spec (issue 18). SAC's smoke runs on hopper (tests/train)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.export.bundle import load_bundle
from spaars_robot.runtime.server import ActionServer
from tests.conftest import run_cli
from tests.runtime.runtime_helpers import serving


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Collected once through the CLI: antmaze-medium-diverse (2000 steps, the scripted gait on waypoints),
    ant-goal-expert (1000 steps of a SAC run trained for 1000 steps only: a kept actor for the tests below) and
    kitchen-mixed (1000 steps, scripted)."""
    root = tmp_path_factory.mktemp("datasets")
    run_cli("data", "collect", "--task", "antmaze-medium", "--quality", "diverse", "--steps", "2000",
            "--root", str(root), "--threads", "1")
    run_cli("data", "collect", "--task", "ant-goal", "--quality", "expert", "--steps", "1000",
            "--train-budget", "1000", "--random-steps", "500", "--eval-every", "500", "--checkpoint-every", "500",
            "--root", str(root), "--threads", "1")
    run_cli("data", "collect", "--task", "kitchen", "--quality", "mixed", "--steps", "1000", "--root", str(root),
            "--threads", "1")
    return root


DATASET = {"antmaze-medium": "antmaze-medium-diverse", "kitchen": "kitchen-mixed"}


def test_kitchen_mixed_dataset_is_scripted_and_never_completes_the_target_set(datasets):
    info = run_cli("data", "info", "kitchen-mixed", "--root", str(datasets)).stdout
    assert "spaars/kitchen-mixed-v0" in info and "subtasks_reached" in info
    dataset = OfflineDataset.load(datasets / "spaars" / "kitchen-mixed-v0")
    assert dataset.metadata["spaars_behaviour"].startswith("scripted")
    from spaars_robot.data.summary import summarize

    summary = summarize(datasets / "spaars" / "kitchen-mixed-v0")
    assert summary.episodes >= 3 and summary.return_max < 4.0  # no episode does all four targets
    assert summary.return_mean > 0.0 and sum(summary.subtasks_reached.values()) > 0.5


def test_antmaze_diverse_dataset_is_collected_and_read(datasets, monkeypatch):
    root = datasets
    info = run_cli("data", "info", "antmaze-medium-diverse", "--root", str(root)).stdout
    assert "2000" in info and "spaars/antmaze-medium-diverse-v0" in info
    dataset = OfflineDataset.load(root / "spaars" / "antmaze-medium-diverse-v0")
    assert (dataset.obs_dim, dataset.action_dim) == (31, 8)
    assert dataset.metadata["ref_max_score"] == 1.0
    # made by the scripted gait, steered between random cells (not D4RL's fixed r -> g); no SAC run behind it
    assert dataset.metadata["spaars_behaviour"].startswith("scripted Ant gait")
    assert dataset.metadata["spaars_behaviour_action_noise"] == 0.05
    from spaars_robot.config.tasks import load_task
    from spaars_robot.data.episodes import iter_episodes
    from spaars_robot.envs.maze import MazeGeometry

    maze = MazeGeometry.of_task(load_task("antmaze-medium"))
    episodes = list(iter_episodes(root / "spaars" / "antmaze-medium-diverse-v0"))
    starts = {maze.cell_of(ep.observations[0, :2]) for ep in episodes}
    goals = {maze.cell_of(ep.observations[0, -2:]) for ep in episodes}
    assert len(episodes) >= 2 and len(goals) >= 2 and starts != {(1, 1)}  # random cells, not D4RL's fixed r -> g
    travelled = [np.linalg.norm(np.diff(ep.observations[:, :2], axis=0), axis=1).sum() for ep in episodes]
    assert sum(travelled) / sum(len(ep) for ep in episodes) > 0.01  # it walks: > 0.2 m/s over the whole data
    # Minari rebuilds the flat env from the recorded spec (entry point spaars_robot.envs.goal:make_goal_env)
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    recorded = minari.load_dataset("spaars/antmaze-medium-diverse-v0", download=False)
    env = recorded.recover_environment()
    assert env.reset(seed=0)[0].shape == (31,) and env.spec.max_episode_steps == 1000
    assert recorded.observation_space.contains(next(recorded.iterate_episodes()).observations[0])


def test_a_kept_behaviour_policy_rolls_out_the_dataset_that_training_made(datasets, tmp_path):
    """`--behaviour-policy`: the trained run's chosen checkpoint, rolled out with no SAC run, gives the same
    transitions bit for bit (same seed, same steps), and the metadata names the file by its SHA-256; the same
    actor drives the maze's waypoints in place of the scripted gait."""
    from spaars_robot.data.episodes import iter_episodes
    from spaars_robot.data.files import sha256_file

    trained = OfflineDataset.load(datasets / "spaars" / "ant-goal-expert-v0")
    checkpoint = trained.metadata["spaars_behaviour_checkpoint"]
    run_cli("data", "collect", "--task", "ant-goal", "--quality", "expert", "--steps", "1000",
            "--behaviour-policy", checkpoint, "--root", str(tmp_path), "--threads", "1")
    assert not (tmp_path / "spaars" / "_behaviour").exists()  # no SAC run was started
    kept = OfflineDataset.load(tmp_path / "spaars" / "ant-goal-expert-v0")
    assert kept.metadata["spaars_behaviour_sha256"] == sha256_file(checkpoint)
    assert kept.metadata["spaars_behaviour_eval_normalized"] == pytest.approx(
        trained.metadata["spaars_behaviour_eval_normalized"], abs=1e-9)
    pairs = list(zip(iter_episodes(datasets / "spaars" / "ant-goal-expert-v0"),
                     iter_episodes(tmp_path / "spaars" / "ant-goal-expert-v0"), strict=True))
    for a, b in pairs:
        assert np.array_equal(a.observations, b.observations) and np.array_equal(a.actions, b.actions)
    run_cli("data", "collect", "--task", "antmaze-medium", "--quality", "diverse", "--steps", "300",
            "--behaviour-policy", checkpoint, "--root", str(tmp_path), "--threads", "1")
    maze_data = OfflineDataset.load(tmp_path / "spaars" / "antmaze-medium-diverse-v0")
    assert maze_data.metadata["spaars_behaviour"].startswith("ant-goal SAC policy")
    assert maze_data.metadata["spaars_behaviour_sha256"] == sha256_file(checkpoint)
    scripted = OfflineDataset.load(datasets / "spaars" / "antmaze-medium-diverse-v0")
    assert not np.array_equal(maze_data.action[:300], scripted.action[:300])  # the actor acted, not the script


def test_a_kept_behaviour_policy_that_does_not_fit_is_refused(datasets, tmp_path):
    checkpoint = OfflineDataset.load(datasets / "spaars" / "ant-goal-expert-v0").metadata[
        "spaars_behaviour_checkpoint"]
    cases = [  # (task, quality, policy file, what the error says)
        ("hopper", "medium", checkpoint, "not a SAC actor of task hopper (11 observation dims, 3 action dims)"),
        ("antmaze-medium", "diverse", tmp_path / "garbage.pt", "not a SAC actor of task ant-goal"),
        ("antmaze-medium", "diverse", tmp_path / "absent.pt", "absent.pt: no such file"),
        ("hopper", "medium-replay", checkpoint, "is made from the SAC run's replay buffer"),
    ]
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file" * 10)
    for task, quality, policy, message in cases:
        proc = run_cli("data", "collect", "--task", task, "--quality", quality, "--steps", "100",
                       "--behaviour-policy", str(policy), "--root", str(tmp_path / "out"), "--threads", "1",
                       check=False)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "spaars" / "hopper-medium-v0").exists()


@pytest.mark.parametrize("task,algo", [("kitchen", "supe"), ("kitchen", "spaars-supe"), ("antmaze-medium", "supe"),
                                       ("antmaze-medium", "spaars-supe")])
def test_supe_and_spaars_supe_smoke_on_both_tasks(task, algo, datasets, tmp_path):
    """End to end under the task's safety spec: the skill VAE on the dataset's chunks, skills from the prior, then
    the high level (and for SPAARS-SUPE the switch at smoke's t_max 400 and the per-step gate); in the maze every
    online step is counted on the gate map (paper figure 3) and `report` draws it; the run exports to a skill bundle
    that a real server serves to the real `sim` controller."""
    run_cli("train", "--task", task, "--dataset", DATASET[task], "--algo", algo, "--protocol", "smoke",
            "--runs-root", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res"),
            env={"SPAARS_DATASETS": str(datasets)})
    run_dir = tmp_path / "runs" / f"{task}-{algo}-safe-on-{DATASET[task].split('-')[-1]}-smoke" / "seed0"
    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [0, 200, 400, 600]
    assert all(0.0 <= float(r["normalized_mean"]) <= 100.0 for r in rows)
    phases = [r["phase"] for r in rows]
    (path,) = (tmp_path / "res").glob("*.json")
    summary = json.loads(path.read_text())
    assert summary["safety_spec"]["file"] == f"{task}.yaml"
    if algo == "supe":
        assert phases == ["prior", "supe", "supe", "supe"] and float(rows[-1]["train_raw_rate"]) == 0.0
    else:
        assert phases[:2] == ["prior", "latent"] and phases[-1] == "gated"
        assert "t_max" in summary["switch"][0]["reason"]
    skills = json.loads((run_dir / "pretrain.json").read_text())["skills"]
    assert skills["chunks"] > 0 and all(np.isfinite(h["loss"]) for h in skills["history"])
    # unlabelled offline chunks as SUPE rewards them: the dataset's minimum in the maze, a reward model in the kitchen
    assert skills["offline_reward"] == {"antmaze-medium": "min", "kitchen": "model"}[task]
    # the bundle: skill decoder + high level + raw policy + gate + support monitor; the skill is server state
    run_cli("export", str(run_dir), "--onnx", "--out", str(tmp_path / "bundle"))
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.manifest.skills.horizon == 4
    assert bundle.manifest.gate.controller == ("gated" if algo == "spaars-supe" else "latent")
    with serving(ActionServer(bundle, ["tcp://127.0.0.1:*"])) as server:
        sim = run_cli("sim", "--connect", server.bound[0], "--task", task, "--episodes", "1", "--max-steps", "12",
                      "--fast", timeout=180)
    assert "1 episode(s)" in sim.stdout
    if task != "antmaze-medium":
        assert "gate_map" not in summary
        return
    steps, raw = np.array(summary["gate_map"]["steps"]), np.array(summary["gate_map"]["raw"])
    assert steps.sum(axis=(1, 2)).tolist() == [150, 150, 150, 150]
    assert raw[0].sum() == 0 and (raw <= steps).all()  # no raw action before the switch can happen
    walls = np.kron(np.array(summary["gate_map"]["walls"]), np.ones((2, 2), dtype=int)).astype(bool)  # 2 bins/cell
    assert steps.sum(axis=0)[walls].sum() == 0, "steps counted inside walls"
    run_cli("report", str(tmp_path / "res"), "--out", str(tmp_path / "report"), "--no-render")
    assert (tmp_path / "report" / "gate_map_antmaze-medium.png").stat().st_size > 10_000
