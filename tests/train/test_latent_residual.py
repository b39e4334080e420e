"""SPAARS's raw policy as a bounded residual on the latent controller (`online.raw_form=latent_residual`):
the module's guarantees, and a smoke run through the real CLI, its export and its ONNX raw output."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from spaars_robot.algos.latent_residual import LatentResidualPolicy
from spaars_robot.algos.offline import OfflineNets
from spaars_robot.config.training import ConfigError, PretrainConfig, load_run_config, resolve_config
from spaars_robot.data.files import safe_torch_load
from spaars_robot.export.bundle import load_bundle
from spaars_robot.export.session import make_session
from spaars_robot.nn.normalizer import ObsNormalizer
from tests.conftest import run_cli

FLAG = ["--set", "online.raw_form=latent_residual"]


def _nets() -> OfflineNets:
    torch.manual_seed(0)
    return OfflineNets(11, 3, PretrainConfig(hidden=(32, 32), cvae_hidden=(32, 32)))


def test_the_raw_controller_starts_as_the_latent_one_and_never_leaves_the_bound():
    nets = _nets()
    policy = LatentResidualPolicy(nets.latent_policy, nets.cvae, 11, 3, (32, 32), bound=0.2)
    s = torch.randn(256, 11)
    with torch.no_grad():
        assert torch.equal(policy.mean_action(s), nets.decoded_latent_mean(s))  # zero residual at initialisation
        for p in policy.residual_parameters():  # a residual net driven to saturation
            p.normal_(0.0, 10.0)
        raw, lat = policy.mean_action(s), nets.decoded_latent_mean(s)
    gap = (raw - lat).abs()
    assert float(gap.max()) <= 0.2 + 1e-6 and float(gap.max()) > 0.1  # bounded, and the residual really acts
    assert float(raw.abs().max()) <= 1.0


def test_the_raw_actor_loss_moves_only_the_residual():
    nets = _nets()
    policy = LatentResidualPolicy(nets.latent_policy, nets.cvae, 11, 3, (32, 32), bound=0.3)
    nets.critic(torch.randn(8, 11), policy.mean_action(torch.randn(8, 11))).mean().backward()
    assert all(p.grad is None for p in nets.latent_policy.parameters())
    assert all(p.grad is None for p in nets.cvae.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in policy.residual_parameters())


@pytest.mark.parametrize("algo,sets,message", [
    ("latent", ["online.raw_form=latent_residual"], "only spaars and raw"),
    ("spaars", ["online.raw_form=latent_residual", "online.raw_init=spar"], "rectified"),
    ("spaars", ["online.raw_residual_bound=0.1"], "only online.raw_form=latent_residual"),
    ("spaars", ["online.raw_residual_objective=q"], "only online.raw_form=latent_residual"),
])
def test_settings_it_would_ignore_are_refused(algo, sets, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("short", {"task": "hopper", "dataset": "x", "algo": algo}, sets)


def _gated_residual_gap(objective: str, updates: int = 200) -> float:
    """Mean |raw - latent action| after `updates` gated-phase updates on fixed random batches."""
    from spaars_robot.algos.spaars import SPAARSAgent
    from tests.train.test_held_out_gate_critic import _batch

    config = resolve_config("smoke", {"task": "hopper", "dataset": "x", "algo": "spaars", "seed": 0},
                            ["online.raw_form=latent_residual", f"online.raw_residual_objective={objective}"])
    torch.manual_seed(0)
    agent = SPAARSAgent(OfflineNets(11, 3, config.pretrain), config, torch.Generator().manual_seed(0))
    agent.phase = "gated"
    for step in range(updates):
        agent.update(_batch(step))
    s = torch.randn(512, 11, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        policy = agent.latent_residual
        return float((policy.mean_action(s) - policy.anchor_action(s)).abs().mean())


def test_the_q_objective_drops_the_bc_pull_so_the_bound_is_the_only_trust_region():
    # same networks, batches and random streams; only the residual's loss differs. Without the BC term that
    # anchors it on the latent action the residual goes further (towards the bound, 0.3), and stays inside it
    td3bc, q_only = _gated_residual_gap("td3bc"), _gated_residual_gap("q")
    assert q_only > 1.5 * td3bc
    assert q_only <= 0.3


@pytest.fixture(scope="module")
def residual_run(tiny_hopper_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("latent-residual")
    run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--algo", "spaars", "--protocol",
            "smoke", "--safety-spec", "none", *FLAG, "--runs-root", str(root / "runs"),
            "--results-dir", str(root / "res"), env={"SPAARS_CACHE": str(root / "cache")})
    (run_dir,) = [p.parent for p in (root / "runs").glob("*/seed0/metrics.csv")]
    return run_dir


def test_a_run_switches_with_a_calibrated_raw_policy_and_the_residual_learns_after(residual_run):
    with open(residual_run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    phases = [r["phase"] for r in rows]
    assert "gated" in phases
    # concurrent BC on a zero residual: the raw controller is the latent one until the switch
    latent_rows = [r for r in rows if r["phase"] == "latent"]
    assert latent_rows and all(float(r["bc_error"]) == 0.0 for r in latent_rows)
    agent = safe_torch_load(residual_run / "checkpoint.pt")["agent"]
    last = [v for k, v in agent["raw_residual"].items() if k.endswith("weight")][-1]
    assert float(last.abs().max()) > 0, "the gated phase's TD3+BC loss never moved the residual"


def test_its_bundle_serves_the_latent_action_plus_residual(residual_run, tmp_path):
    out = tmp_path / "bundle"
    run_cli("export", str(residual_run.parent), "--onnx", "--out", str(out))
    config, _ = load_run_config(residual_run)
    state = safe_torch_load(residual_run / "checkpoint.pt")["agent"]
    nets = OfflineNets(11, 3, config.pretrain)
    nets.load_state_dict(state["nets"])
    policy = LatentResidualPolicy(nets.latent_policy, nets.cvae, 11, 3, config.online.hidden,
                                  config.online.raw_residual_bound)
    policy.load_residual_state_dict(state["raw_residual"])
    normalizer = ObsNormalizer(state["nets"]["normalizer.mean"], state["nets"]["normalizer.std"])
    obs = np.random.default_rng(0).normal(size=(16, 11)).astype(np.float32)
    with torch.no_grad():
        s = normalizer(torch.as_tensor(obs))
        expected, latent = policy.mean_action(s).numpy(), nets.decoded_latent_mean(s).numpy()
    assert not np.allclose(expected, latent)  # the bundle's raw output is not the latent one under another name
    session = make_session(load_bundle(out).graph_path)
    raw, latent_out = session.run(None, {session.get_inputs()[0].name: obs})[:2]
    np.testing.assert_allclose(raw, expected, atol=1e-5)
    np.testing.assert_allclose(latent_out, latent, atol=1e-5)


def test_raw_fine_tuning_runs_the_residual_form_from_the_first_step(tiny_hopper_dataset, tmp_path):
    """`--algo raw` with the residual form: raw fine-tuning of latent + residual (the latent policy still learns
    by SAC underneath), executed on every evaluation step from the start."""
    run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--algo", "raw", "--protocol",
            "smoke", "--safety-spec", "none", *FLAG, "--runs-root", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "res"), env={"SPAARS_CACHE": str(tmp_path / "cache")})
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/seed0/metrics.csv")]
    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["phase"] for r in rows} == {"gated"} and all(float(r["eval_raw_rate"]) == 1.0 for r in rows)
    agent = safe_torch_load(run_dir / "checkpoint.pt")["agent"]
    last = [v for k, v in agent["raw_residual"].items() if k.endswith("weight")][-1]
    assert float(last.abs().max()) > 0
