"""The gate-learnability bound: predictors fitted on branched ground truth, scored on the diagnostic's (issue 16)."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, run_cli


@pytest.fixture()
def learnability(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module("gate_learnability")


def test_ridge_learns_a_linear_sign_and_nearest_neighbours_a_local_one(learnability):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    linear = x @ np.array([1.0, -2.0, 0.0, 0.5, 0.0, 0.0])
    prediction = learnability.ridge(1.0)(x[:300], linear[:300], x[300:])
    assert ((prediction > 0) == (linear[300:] > 0)).mean() > 0.95
    plane = x[:, :2]
    local = np.where(np.linalg.norm(plane, axis=1) < 1.0, 1.0, -1.0)  # a disc: no line separates it
    assert ((learnability.nearest(5)(plane[:300], local[:300], plane[300:]) > 0) == (local[300:] > 0)).mean() > 0.85
    assert ((learnability.ridge(1.0)(plane[:300], local[:300], plane[300:]) > 0) == (local[300:] > 0)).mean() < 0.8
    # k = 1 on the training points themselves gives back their own labels
    assert np.array_equal(learnability.nearest(1)(x[:50], local[:50], x[:50]), local[:50])


def test_cross_validation_keeps_episodes_whole_and_chooses_the_better_candidate(learnability):
    episodes = np.repeat(np.arange(7), 5)
    fold = learnability.episode_folds(episodes, 3)
    assert all(len(set(fold[episodes == e])) == 1 for e in range(7)) and set(fold) == {0, 1, 2}
    rng = np.random.default_rng(1)
    x = rng.normal(size=(35, 3))
    y = x[:, 0] + 0.01 * rng.normal(size=35)
    significant = np.ones(35, dtype=bool)
    best, scores = learnability.choose({"right": learnability.ridge(1.0),
                                        "wrong": lambda a, b, c: -learnability.ridge(1.0)(a, b, c)},
                                       x, y, significant, fold)
    assert best == "right" and scores["right"] > 0.9 > 0.1 > scores["wrong"]


def test_neighbour_agreement_counts_significant_pairs_within_an_episode(learnability):
    truth = np.array([1.0, 2.0, -1.0, -3.0, 4.0, 5.0])
    significant = np.array([True, True, True, False, True, True])
    episodes = np.array([0, 0, 0, 0, 1, 1])
    # pairs (0,1) same, (1,2) flips, (2,3) has an insignificant state, (3,4) crosses episodes, (4,5) same
    assert learnability.neighbour_agreement(truth, significant, episodes)["pairs"] == 3
    assert learnability.neighbour_agreement(truth, significant, episodes)["same_sign"] == pytest.approx(2 / 3)
    assert learnability.neighbour_agreement(truth, ~significant, episodes)["same_sign"] is None


def test_learnability_runs_on_a_real_run_against_its_diagnostic(tiny_hopper_dataset, tmp_path):
    cache = tmp_path / "cache"
    run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--algo", "spaars", "--protocol",
            "smoke", "--runs-root", str(tmp_path / "runs"), "--safety-spec", "none", env={"SPAARS_CACHE": str(cache)})
    run_dir = tmp_path / "runs" / "hopper-spaars-smoke" / "seed0"
    holdout = tmp_path / "diagnostic.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "gate_accuracy.py"), str(run_dir), "--cache-dir",
                    str(cache), "--states", "16", "--stride", "5", "--horizon", "15", "--repeats", "3", "--out",
                    str(holdout)], check=True, capture_output=True, text=True, timeout=300, cwd=REPO)

    def learn(path, *extra):
        return subprocess.run([sys.executable, str(REPO / "benchmarks" / "gate_learnability.py"), "--holdout",
                               str(path), "--cache-dir", str(cache), "--states", "20", "--repeats", "2", "--folds",
                               "2", *extra], capture_output=True, text=True, timeout=300, cwd=REPO)

    done = learn(holdout, "--out", str(tmp_path / "learn.json"))
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "learn.json").read_text())
    diagnostic = json.loads(holdout.read_text())
    assert result["holdout_states"] == 16 and result["training"]["states"] == 20 and result["training"]["repeats"] == 2
    assert result["holdout_significant_states"] == diagnostic["significant_states"]
    scores = result["scores"]
    # the run's critic scored here is the diagnostic's own number, on the same states and truth
    assert scores["run_critic_mean_advantage"]["sign_accuracy"] == diagnostic["mean_advantage_sign_accuracy"]
    assert scores["run_gate_deployed"]["sign_accuracy"] == diagnostic["deployed_sign_accuracy"]
    assert scores["constant"]["raw_rate"] in (0.0, 1.0)
    assert set(scores) == {"constant", result["chosen"]["ridge"], result["chosen"]["knn"],
                           "run_critic_mean_advantage", "run_gate_deployed"}
    assert [v["states"] for v in result["learning_curve"].values()][-1] == 20
    # a holdout whose states this run does not produce is refused, and nothing is written
    tampered = {**diagnostic, "per_state": {**diagnostic["per_state"],
                                            "lcb": [x + 1.0 for x in diagnostic["per_state"]["lcb"]]}}
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    refused = learn(tmp_path / "tampered.json", "--out", str(tmp_path / "never.json"))
    assert refused.returncode != 0 and "not the written ones" in refused.stderr
    assert not (tmp_path / "never.json").exists()
    assert "--repeats must be >= 2" in learn(holdout, "--repeats", "1").stderr
