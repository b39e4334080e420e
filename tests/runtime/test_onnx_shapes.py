"""The exported graph describes itself: static output sizes but the batch, and the task's element names.

The legacy exporter left `raw_action` as [batch, 'Mulraw_action_dim_1'], so onnxruntime (or a C++ runtime
sizing its buffers) could not read the action size from the graph; and every bundle named its elements
obs_0.. even where the task knows what they are. Checked on a fresh export and on the shipped bundle.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import yaml

from spaars_robot.config.tasks import load_task, tasks_dir
from spaars_robot.export.bundle import DEFAULT_BUNDLE, load_bundle, resolve_bundle
from spaars_robot.export.onnx_export import export_bundle
from spaars_robot.export.stack import OUTPUT_NAMES, random_stack
from tests.runtime.runtime_helpers import ACT_DIM, OBS_DIM, hopper_info

EXPECTED = {"raw_action": ["batch", ACT_DIM], "latent_action": ["batch", ACT_DIM], "gate_advantage": ["batch"],
            "support_score": ["batch"]}


def graph_dims(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    return {value.name: [d.dim_param if d.HasField("dim_param") else d.dim_value
                         for d in value.type.tensor_type.shape.dim]
            for value in [*model.graph.input, *model.graph.output]}


def assert_static_but_batch(graph: Path) -> None:
    assert graph_dims(onnx.load(str(graph))) == {"obs": ["batch", OBS_DIM], **EXPECTED}
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    assert {o.name: o.shape for o in session.get_outputs()} == EXPECTED
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("obs", ["batch", OBS_DIM])]
    for batch in (1, 5):
        outputs = session.run(list(OUTPUT_NAMES), {"obs": np.zeros((batch, OBS_DIM), np.float32)})
        assert [list(o.shape) for o in outputs] == [[batch, *EXPECTED[n][1:]] for n in OUTPUT_NAMES]


def test_export_pins_output_shapes_and_names_elements_from_the_task(tmp_path) -> None:
    manifest = export_bundle(random_stack(OBS_DIM, ACT_DIM, seed=3), hopper_info(), tmp_path / "b")
    assert_static_but_batch(tmp_path / "b" / "policy.onnx")
    obs_names, action_names = load_task("hopper").names()
    assert obs_names[0] == "rootz_pos" and action_names[0] == "thigh_joint_torque"
    assert (manifest.observation.names, manifest.action.names) == (obs_names, action_names)
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "b" / "policy.onnx")).metadata_props}
    assert props["spaars.observation_names"] == ",".join(obs_names)
    assert props["spaars.action_names"] == ",".join(action_names)


def test_task_without_names_exports_generic_ones(tmp_path) -> None:
    raw = yaml.safe_load((tasks_dir() / "hopper.yaml").read_text())
    del raw["observation_names"], raw["action_names"]
    task_file = tmp_path / "hopper.yaml"
    task_file.write_text(yaml.safe_dump(raw))
    manifest = export_bundle(random_stack(OBS_DIM, ACT_DIM, seed=3), hopper_info(task=str(task_file)),
                             tmp_path / "b", safety_spec="hopper")
    assert manifest.observation.names == [f"obs_{i}" for i in range(OBS_DIM)]
    assert manifest.action.names == [f"action_{i}" for i in range(ACT_DIM)]


def test_shipped_bundle_has_static_shapes_and_the_task_names() -> None:
    bundle = load_bundle(resolve_bundle(DEFAULT_BUNDLE))  # verifies hashes and ONNX metadata against the manifest
    assert_static_but_batch(bundle.graph_path)
    names = json.loads((bundle.path / "manifest.json").read_text())
    assert (names["observation"]["names"], names["action"]["names"]) == tuple(load_task("hopper").names())


def test_controller_announces_what_export_writes(tmp_path) -> None:
    """`sim` says hello with the task's names; a bundle exported for the task must carry the same ones."""
    from spaars_robot.runtime.sim_client import task_schema

    manifest = export_bundle(random_stack(OBS_DIM, ACT_DIM, seed=3), hopper_info(), tmp_path / "b")
    schema = task_schema(load_task("hopper"))
    assert (list(schema.obs_names), list(schema.action_names)) == (manifest.observation.names, manifest.action.names)
