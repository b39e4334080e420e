"""PolicyStack -> ONNX policy bundle (`policy.onnx` + `manifest.json`), refusing any bundle that fails parity.

One fused graph with all four outputs is exported: the gate and the support monitor need the raw and the
latent actions anyway, so a single onnxruntime call shares that work and pays the per-call overhead once
(measured against separate graphs in BENCHMARKS.md, "Serving latency"). Observation normalisation is part
of the graph (rsl_rl exporter), the legacy TorchScript exporter is used because it is deterministic and
~100x faster than dynamo for these small MLPs (feasibility.md section 4), and parity is checked against
torch at atol 1e-5 (mjlab PR #805) before anything is written where a server could load it.
"""
from __future__ import annotations

import copy
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from spaars_robot.algos.latch import SUPPORT_HYSTERESIS_REL
from spaars_robot.config.tasks import load_task
from spaars_robot.data.files import atomic_write_bytes, sha256_file
from spaars_robot.errors import SpaarsError
from spaars_robot.export.manifest import (
    MANIFEST_NAME,
    BundleManifest,
    GateSpec,
    GraphSpec,
    ParityReport,
    SkillSpec,
    SupportSpec,
    TensorSchema,
    TrainingProvenance,
)
from spaars_robot.export.session import make_session
from spaars_robot.export.stack import OUTPUT_NAMES, SKILL_OUTPUT, PolicyStack, RunExportInfo, SkillPolicyStack

Stack = PolicyStack | SkillPolicyStack

GRAPH_FILE = "policy.onnx"
OPSET = 17
PARITY_ATOL = 1e-5


class ExportError(SpaarsError):
    """The bundle could not be written (bad target, inconsistent run info)."""


class ParityError(ExportError):
    """onnxruntime disagrees with torch beyond the tolerance; the bundle is not written."""


def export_onnx_graph(stack: Stack, obs_dim: int, path: Path) -> None:
    """Write the fused graph with a dynamic batch axis: input `obs` [B, obs_dim] float32 (skill stacks also take
    `skill` [B, k] and `choose_skill` [B]), outputs `stack.output_names`.

    Every output's shape is static but the batch axis: the legacy exporter leaves names such as
    `Mulraw_action_dim_1` where it cannot infer a size, so a consumer (onnxruntime's session, a C++ runtime
    sizing its buffers) could not read the action size from the graph. The sizes come from running the stack.
    """
    example = stack.example_inputs(torch.zeros(2, obs_dim, dtype=torch.float32), torch.Generator().manual_seed(0))
    dynamic = {name: {0: "batch"} for name in (*stack.input_names, *stack.output_names)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation notice; we choose it on purpose
        torch.onnx.export(stack, example, str(path), input_names=list(stack.input_names),
                          output_names=list(stack.output_names), dynamic_axes=dynamic, opset_version=OPSET,
                          dynamo=False, do_constant_folding=True)
    with torch.no_grad():
        sizes = {name: tuple(out.shape[1:]) for name, out in zip(stack.output_names, stack(*example))}
    model = onnx.load(str(path))
    pin_output_shapes(model, sizes)
    onnx.save(model, str(path))


def pin_output_shapes(model: onnx.ModelProto, sizes: dict[str, tuple[int, ...]]) -> None:
    """Declare each graph output as [batch, *sizes[name]] (`batch` stays the one symbolic axis)."""
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        del dims[:]
        dims.add().dim_param = "batch"
        for size in sizes[output.name]:
            dims.add().dim_value = int(size)


def parity_errors(torch_outputs: dict[str, np.ndarray], ort_outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """Max absolute difference per output; NaN anywhere counts as infinite error."""
    errors = {}
    for name in torch_outputs:
        expected, got = np.asarray(torch_outputs[name]), np.asarray(ort_outputs[name])
        if expected.shape != got.shape:
            raise ParityError(f"output {name}: onnxruntime shape {got.shape} != torch shape {expected.shape}")
        diff = np.abs(expected.astype(np.float64) - got.astype(np.float64))
        errors[name] = math.inf if not np.all(np.isfinite(diff)) else float(diff.max(initial=0.0))
    return errors


def check_parity(errors: dict[str, float], atol: float = PARITY_ATOL) -> None:
    """Raise ParityError naming every output whose max error exceeds atol."""
    bad = {name: err for name, err in errors.items() if not err <= atol}
    if bad:
        detail = ", ".join(f"{name} {err:.3g}" for name, err in bad.items())
        raise ParityError(f"onnxruntime vs torch max abs error above {atol:g}: {detail}; bundle not written")


def parity_observations(stack: Stack, info: RunExportInfo, n_random: int, seed: int = 0) -> np.ndarray:
    """Recorded dataset observations plus random ones spread over ~3 normaliser std around the mean."""
    recorded = np.asarray(info.calibration_obs, dtype=np.float32).reshape(-1, info.obs_dim)
    rng = np.random.default_rng(seed)
    mean = stack.normalizer.mean.numpy()
    std = stack.normalizer.std.numpy()
    random = (mean + 3.0 * std * rng.standard_normal((n_random, info.obs_dim))).astype(np.float32)
    return np.concatenate([recorded, random], axis=0)


def measure_parity(stack: Stack, session: ort.InferenceSession, obs: np.ndarray) -> dict[str, float]:
    """Max |onnxruntime - torch| per output; `gate_advantage`'s in units of the mean |Q| it is computed from (a
    rollout gate's: of the largest fitted difference, which its prediction is a weighted mean of; export/from_run.py).

    The advantage is a difference of two Q values of order 100, so float32 leaves it ~1e-5 of |Q| apart between
    any two correct implementations. Divided by the gate's scale, that error grows by |Q| / scale: harmless with
    `gate.scale: q` (scale ~ |Q|), ~4000x with `gate.scale: advantage` (scale ~ mean |A|, 0.03 on hopper), which
    failed parity on a correct graph. Measured relative to |Q|, the tolerance means the same for both scales.
    """
    with torch.no_grad():
        inputs = stack.example_inputs(torch.from_numpy(obs), torch.Generator().manual_seed(1))
        torch_out = dict(zip(stack.output_names, (t.numpy() for t in stack(*inputs))))
        s = stack.normalizer(inputs[0])
        q_abs = float(stack.critic(s, stack.raw_policy.mean_action(s)).abs().mean())
    feeds = {name: tensor.numpy() for name, tensor in zip(stack.input_names, inputs)}
    ort_out = dict(zip(stack.output_names, session.run(list(stack.output_names), feeds)))
    errors = parity_errors(torch_out, ort_out)
    if getattr(stack, "state_gate", None) is None:  # a rollout gate's is already in units of its largest value
        errors["gate_advantage"] *= float(stack.gate_scale) / max(q_abs, 1.0)
    return errors


def build_manifest(info: RunExportInfo, parity: ParityReport, support_hysteresis: float | None = None,
                   obs_names: list[str] | None = None, action_names: list[str] | None = None,
                   skill_dim: int | None = None) -> BundleManifest:
    """Manifest without file hashes; actions are tanh-bounded in [-1, 1] by construction of the policies.

    `skill_dim`: the bundle is a skill policy (SkillPolicyStack) whose skills `info.skill_horizon` says how long
    to hold."""
    if skill_dim is not None and info.skill_horizon is None:
        raise ExportError("a skill policy's export needs the skill horizon (RunExportInfo.skill_horizon)")
    stack_outputs = OUTPUT_NAMES if skill_dim is None else (*OUTPUT_NAMES, SKILL_OUTPUT)
    if support_hysteresis is None:
        support_hysteresis = SUPPORT_HYSTERESIS_REL * abs(info.support_threshold)
    return BundleManifest(
        task=info.task,
        control_rate_hz=info.control_rate_hz,
        observation=TensorSchema(names=obs_names or [f"obs_{i}" for i in range(info.obs_dim)], dim=info.obs_dim,
                                 low=[None] * info.obs_dim, high=[None] * info.obs_dim),
        action=TensorSchema(names=action_names or [f"action_{i}" for i in range(info.action_dim)],
                            dim=info.action_dim, low=[-1.0] * info.action_dim, high=[1.0] * info.action_dim),
        gate=GateSpec(threshold=info.gate_threshold, hysteresis=info.gate_hysteresis, controller=info.controller,
                      form=info.gate_form, fit=info.gate_fit, hold_steps=info.gate_hold_steps),
        support=SupportSpec(threshold=info.support_threshold, hysteresis=support_hysteresis,
                            calibration=info.support_calibration),
        graph=GraphSpec(file=GRAPH_FILE, opset=OPSET, output_names=list(stack_outputs)),
        training=TrainingProvenance(run_dir=info.run_dir, algo=info.algo, seed=info.seed,
                                    train_command=info.train_command, config=info.config),
        parity=parity,
        skills=None if skill_dim is None else SkillSpec(dim=skill_dim, horizon=info.skill_horizon),
        files={},
    )


def export_bundle(stack: Stack, info: RunExportInfo, out_dir: Path | str, *, overwrite: bool = False,
                  atol: float = PARITY_ATOL, n_random_obs: int = 256, support_hysteresis: float | None = None,
                  obs_names: list[str] | None = None, action_names: list[str] | None = None,
                  safety_spec: str | Path | None = None) -> BundleManifest:
    """Export `stack` as a bundle at `out_dir`; written to a temp dir and renamed only after parity passes.

    `safety_spec` (a robot name or a YAML path; default `safety/<task>.yaml`) is checked against the
    bundle's action/observation space and recorded in the manifest, so `serve` can refuse other limits.
    Observation and action names default to the task's (`sim/tasks/<task>.yaml`), which is also what
    `sim` announces in its hello, so the two sides name every element alike.
    """
    from spaars_robot.export.safety_binding import validate_for_export  # safety imports export.manifest
    if obs_names is None or action_names is None:
        task_obs_names, task_action_names = load_task(info.task).names()
        obs_names, action_names = obs_names or task_obs_names, action_names or task_action_names
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ExportError(f"{out_dir} already exists; pass --overwrite to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stack = copy.deepcopy(stack).float().cpu().eval()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.export-", dir=out_dir.parent))
    try:
        graph = tmp / GRAPH_FILE
        export_onnx_graph(stack, info.obs_dim, graph)
        obs = parity_observations(stack, info, n_random_obs)
        errors = measure_parity(stack, make_session(graph), obs)
        check_parity(errors, atol)
        parity = ParityReport(atol=atol, recorded_obs=len(info.calibration_obs), random_obs=n_random_obs,
                              max_abs_error=errors)
        manifest = build_manifest(info, parity, support_hysteresis, obs_names, action_names,
                                  skill_dim=stack.skill_dim if isinstance(stack, SkillPolicyStack) else None)
        manifest.safety = validate_for_export(safety_spec if safety_spec is not None else info.task, manifest)
        model = onnx.load(str(graph))
        onnx.helper.set_model_props(model, manifest.metadata_props())
        onnx.checker.check_model(model, full_check=True)
        atomic_write_bytes(graph, model.SerializeToString())
        manifest.files = {GRAPH_FILE: sha256_file(graph)}
        atomic_write_bytes(tmp / MANIFEST_NAME, (manifest.model_dump_json(indent=2) + "\n").encode())
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
