"""SPAR end to end through the real CLI: a smoke run, its export (raw output = the rectified policy), and serving."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch

from spaars_robot.algos.spar import make_rectified
from spaars_robot.config.training import load_run_config
from spaars_robot.data.files import safe_torch_load
from spaars_robot.export.bundle import load_bundle
from spaars_robot.export.session import make_session
from spaars_robot.nn.normalizer import ObsNormalizer
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def spar_run(tiny_hopper_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("spar")
    run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--algo", "spar", "--protocol",
            "smoke", "--runs-root", str(root / "runs"), "--results-dir", str(root / "res"),
            env={"SPAARS_CACHE": str(root / "cache")})
    return root


def test_a_spar_run_trains_through_the_runner(spar_run):
    run_dir = spar_run / "runs" / "hopper-spar-safe-smoke" / "seed0"
    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [0, 200, 400, 600] and {r["phase"] for r in rows} == {"spar"}
    stages = [h["stage"] for h in json.loads((run_dir / "pretrain.json").read_text())["spar"]["history"]]
    assert stages[0] == "anchor" and "residual" in stages and stages[-1] == "lsi"
    (summary,) = [json.loads(p.read_text()) for p in (spar_run / "res").glob("*.json")]
    assert summary["algo"] == "spar" and 0.0 <= summary["early_out_of_support_rate"] <= 1.0
    agent = safe_torch_load(run_dir / "checkpoint.pt")["agent"]
    assert agent["spar"]["residual_on"] == 1.0


def test_its_bundle_serves_the_rectified_policy(spar_run, tmp_path):
    group = spar_run / "runs" / "hopper-spar-safe-smoke"
    out = tmp_path / "bundle"
    run_cli("export", str(group), "--onnx", "--out", str(out))
    bundle = load_bundle(out)
    assert bundle.manifest.training.algo == "spar"
    config, _ = load_run_config(group / "seed0")
    agent = safe_torch_load(group / "seed0" / "checkpoint.pt")["agent"]
    policy = make_rectified(11, 3, 6, config.spar)
    policy.load_state_dict(agent["spar"])
    normalizer = ObsNormalizer(agent["nets"]["normalizer.mean"], agent["nets"]["normalizer.std"])
    obs = np.random.default_rng(0).normal(size=(16, 11)).astype(np.float32)
    with torch.no_grad():
        expected = policy.mean_action(normalizer(torch.as_tensor(obs))).numpy()
    session = make_session(bundle.graph_path)
    raw = session.run(None, {session.get_inputs()[0].name: obs})[0]
    np.testing.assert_allclose(raw, expected, atol=1e-5)
    # served end to end: the real server process, the simulated robot, MuJoCo
    proc = run_cli("demo", "--bundle", str(out), "--episodes", "1", env={"COLUMNS": "200", **os.environ})
    assert "normalised score" in proc.stdout and "server stopped cleanly (exit 0)" in proc.stdout
    # the rectified policy is what is served (once every SPAR bundle was gated by the critic and served latent actions)
    assert bundle.manifest.gate.controller == "raw" and "latent 0.0%" in proc.stdout, proc.stdout
