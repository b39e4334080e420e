"""Export parity of the gate advantage means the same whatever the gate's scale (found with gate.scale: advantage)."""
from __future__ import annotations

import numpy as np
import torch

from spaars_robot.export.bundle import load_bundle
from spaars_robot.export.onnx_export import PARITY_ATOL, export_bundle, make_session
from spaars_robot.export.stack import random_stack
from tests.runtime.runtime_helpers import hopper_info


def _stack_with_q_of_order_100(gate_scale: float):
    stack = random_stack(11, 3, seed=0, hidden=(64, 64))
    with torch.no_grad():  # Q ~ 150, as IQL's reward scaling gives on hopper
        last = [m for m in stack.critic.modules() if hasattr(m, "bias") and m.bias is not None][-1]
        last.bias.add_(150.0)
        last.weight.mul_(50.0)
    stack.gate_scale.fill_(gate_scale)
    return stack


def test_an_advantage_scaled_gate_exports_and_its_error_is_measured_against_q(tmp_path):
    stack = _stack_with_q_of_order_100(gate_scale=0.03)  # mean |A| on hopper: ~0.03
    export_bundle(stack, hopper_info(), tmp_path / "bundle")
    bundle = load_bundle(tmp_path / "bundle")
    error = bundle.manifest.parity.max_abs_error["gate_advantage"]
    assert 0.0 <= error <= PARITY_ATOL
    # the scaled output itself differs by more than the tolerance (what failed before): the graph is the same maths
    obs = np.random.default_rng(0).normal(0, 1, (64, 11)).astype(np.float32)
    ort = make_session(bundle.path / "policy.onnx").run(["gate_advantage"], {"obs": obs})[0]
    with torch.no_grad():
        ref = stack(torch.from_numpy(obs))[2].numpy()
    assert np.abs(ort - ref).max() * 0.03 / 150.0 <= PARITY_ATOL
