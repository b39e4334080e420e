"""Export: parity with torch, determinism, self-description, and refusal to write a failing bundle."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from spaars_robot.data.files import sha256_file
from spaars_robot.export.onnx_export import (
    ExportError,
    ParityError,
    check_parity,
    export_bundle,
    make_session,
    parity_errors,
)
from spaars_robot.export.stack import OUTPUT_NAMES, PolicyStack, random_stack
from tests.runtime.runtime_helpers import hopper_info, torch_outputs


def test_onnxruntime_matches_torch_on_recorded_and_random_obs(bundle, stack):
    session = make_session(bundle.graph_path)
    recorded = np.asarray(hopper_info().calibration_obs, dtype=np.float32)
    random = np.random.default_rng(7).normal(0, 2, (500, 11)).astype(np.float32)
    for obs in (recorded, random):
        ort_out = session.run(list(OUTPUT_NAMES), {"obs": obs})
        for name, expected, got in zip(OUTPUT_NAMES, torch_outputs(stack, obs), ort_out):
            assert np.abs(expected - got).max() <= 1e-5, name
    assert all(err <= 1e-5 for err in bundle.manifest.parity.max_abs_error.values())


def test_manifest_hashes_and_onnx_metadata_describe_the_bundle(bundle):
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    assert manifest["files"] == {"policy.onnx": sha256_file(bundle.graph_path)}
    assert manifest["support"]["calibration"]["quantile"] == 0.99
    assert manifest["training"]["train_command"] == "spaars-robot train --task hopper"
    model = onnx.load(str(bundle.graph_path))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["spaars.task"] == "hopper" and props["spaars.obs_dim"] == "11"
    assert props["spaars.gate_threshold"] == "0.0"
    assert model.opset_import[0].version >= 17


def test_export_is_deterministic(make_bundle):
    first, second = make_bundle(), make_bundle()
    assert sha256_file(first.graph_path) == sha256_file(second.graph_path)
    assert first.sha256 == second.sha256


class NoisyStack(PolicyStack):
    """Nondeterministic forward: ONNX RandomNormalLike cannot reproduce torch's draws, so parity fails."""

    def forward(self, obs):
        raw, latent, advantage, score = super().forward(obs)
        return raw + 1e-3 * torch.randn_like(raw), latent, advantage, score


def test_export_refuses_bundle_that_fails_parity(tmp_path):
    base = random_stack(11, 3, seed=3)
    noisy = NoisyStack(base.normalizer, base.raw_policy, base.latent_policy, base.cvae, base.critic, 1.0).eval()
    with pytest.raises(ParityError, match="raw_action"):
        export_bundle(noisy, hopper_info(), tmp_path / "noisy")
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor its temp dir is left behind


def test_parity_check_names_every_output_beyond_tolerance():
    torch_out = {name: np.zeros((4, 3), np.float32) for name in OUTPUT_NAMES}
    ort_out = dict(torch_out, support_score=np.full((4, 3), 2e-5, np.float32),
                   gate_advantage=np.full((4, 3), np.nan, np.float32))
    errors = parity_errors(torch_out, ort_out)
    with pytest.raises(ParityError, match="gate_advantage inf, support_score 2e-05"):
        check_parity(errors, atol=1e-5)
    check_parity(parity_errors(torch_out, dict(torch_out, raw_action=np.full((4, 3), 9e-6, np.float32))))


def test_export_refuses_to_overwrite_without_flag(bundle, stack):
    with pytest.raises(ExportError, match="already exists"):
        export_bundle(stack, hopper_info(), bundle.path)


@pytest.mark.parametrize("algo, agent, controller", [
    ("spar", {}, "raw"), ("iql", {}, "raw"), ("bc", {}, "raw"), ("td3bc", {}, "raw"),
    ("supe", {"phase": "gated"}, "latent"),
    ("latent", {"phase": "latent", "force_raw": False}, "latent"),
    ("raw", {"phase": "gated", "force_raw": True}, "raw"),
    ("spaars", {"phase": "latent", "force_raw": False}, "latent"),
    ("spaars", {"phase": "gated", "force_raw": False}, "gated"),
    ("spaars", {"phase": "gated", "force_raw": True}, "raw"),  # --hard-switch after its switch
    ("spaars-supe", {"phase": "latent"}, "latent"), ("spaars-supe", {"phase": "gated"}, "gated"),
])
def test_the_bundle_deploys_the_controller_the_run_evaluated(algo, agent, controller):
    from spaars_robot.export.from_run import deployed_controller

    assert deployed_controller(algo, agent) == controller
    if algo in ("spaars", "latent", "raw"):  # export --gate rollout: the fitted gate is what is asked for
        assert deployed_controller(algo, agent, "rollout") == "gated"


def test_an_algorithm_export_does_not_know_is_refused_rather_than_gated():
    from spaars_robot.errors import SpaarsError
    from spaars_robot.export.from_run import deployed_controller

    with pytest.raises(SpaarsError, match="which controller a newalgo run deploys"):
        deployed_controller("newalgo", {"phase": "gated"})
