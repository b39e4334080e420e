"""The observation dims a run's networks read (`pretrain.observation_dims`, a task's `network_observation`).

SUPE's kitchen networks see joint and object positions only; ours zero the other dims after normalisation. What
must hold: no network output (trained or exported) moves when a masked dim moves, every kept dim still reaches
them, the task's choice is written into the run's config and the pretraining cache key, a run can override it,
old checkpoints (no mask) load as "every dim", and bad ranges are one clear line.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from spaars_robot.config.tasks import load_task
from spaars_robot.config.training import resolve_config
from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.errors import ConfigError
from spaars_robot.export.onnx_export import export_bundle
from spaars_robot.export.stack import random_stack
from spaars_robot.nn.normalizer import ObsNormalizer, kept_dims
from spaars_robot.train.jobs import plan_new
from spaars_robot.train.pretrain import cache_key, pretraining_setup
from tests.runtime.runtime_helpers import ACT_DIM, OBS_DIM, hopper_info

KITCHEN_DIMS = ((0, 9), (18, 39))


def _masked_stack(keep_ranges):
    stack = random_stack(OBS_DIM, ACT_DIM, seed=4)
    norm = stack.normalizer
    stack.normalizer = ObsNormalizer(norm.mean, norm.std, keep=kept_dims(keep_ranges, OBS_DIM))
    return stack


def test_masked_dims_reach_no_output_in_torch_or_in_the_exported_graph(tmp_path):
    stack = _masked_stack(((0, 5),))
    export_bundle(stack, hopper_info(), tmp_path / "b")
    session = ort.InferenceSession(str(tmp_path / "b" / "policy.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((16, OBS_DIM)).astype(np.float32)
    moved_masked, moved_kept = obs.copy(), obs.copy()
    moved_masked[:, 5:] += 3.0 * rng.standard_normal((16, OBS_DIM - 5)).astype(np.float32)
    moved_kept[:, :5] += 1.0
    run = lambda o: session.run(None, {"obs": o})  # noqa: E731
    with torch.no_grad():
        torch_out = lambda o: [t.numpy() for t in stack(torch.from_numpy(o))]  # noqa: E731
        for outputs in (run, torch_out):
            base, masked, kept = outputs(obs), outputs(moved_masked), outputs(moved_kept)
            for a, b in zip(base, masked):
                np.testing.assert_array_equal(a, b)
            assert all(np.abs(a - b).max() > 1e-4 for a, b in zip(base, kept))


def test_a_checkpoint_from_before_the_mask_loads_as_every_dim():
    old = {"mean": torch.arange(4.0), "std": torch.ones(4)}
    norm = ObsNormalizer(torch.zeros(4), torch.ones(4), keep=kept_dims(((0, 1),), 4))
    norm.load_state_dict(old)
    assert norm.keep.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert norm(torch.full((1, 4), 5.0)).tolist() == [[5.0, 4.0, 3.0, 2.0]]


def test_pretraining_zeroes_the_masked_dims_of_the_dataset_buffer(tiny_hopper_dataset):
    dataset = OfflineDataset.load(tiny_hopper_dataset)
    cfg = resolve_config("smoke", {"task": "hopper", "dataset": "x", "algo": "iql", "seed": 0},
                         ["pretrain.observation_dims=[[0,5]]"]).pretrain
    resumable, buffer, _ = pretraining_setup(dataset, cfg, seed=0)
    obs = buffer.obs[: buffer.size]
    assert torch.all(obs[:, 5:] == 0) and torch.all(obs[:, :5].std(0) > 0.1)
    assert resumable["nets"].normalizer.keep.tolist() == [1.0] * 5 + [0.0] * (OBS_DIM - 5)


def _plan(task, sets, tmp_path):
    return plan_new(task, "d", None, "supe", [0], "supe-short", sets, [], tmp_path / "runs", None,
                    tmp_path / "cache", False, safety_spec="none")[0].config


def test_the_task_decides_unless_the_run_says_otherwise_and_the_key_follows(tmp_path):
    assert load_task("kitchen").network_observation == [tuple(r) for r in KITCHEN_DIMS]
    kitchen = _plan("kitchen", [], tmp_path)
    assert kitchen.pretrain.observation_dims == KITCHEN_DIMS and kitchen.tag == ""
    every = _plan("kitchen", ["pretrain.observation_dims=[[0,71]]"], tmp_path)
    assert every.pretrain.observation_dims == ((0, 71),) and every.tag  # an override names the run
    assert _plan("hopper", [], tmp_path).pretrain.observation_dims is None
    data = type("D", (), {"metadata": {"spaars_checksums": {"main_data.hdf5": "ab" * 32}}})()
    assert cache_key(data, 0, kitchen.pretrain) != cache_key(data, 0, every.pretrain)


@pytest.mark.parametrize("sets, message", [
    (["pretrain.observation_dims=[[9,3]]"], "non-overlapping"),
    (["pretrain.observation_dims=[[0,9],[5,12]]"], "non-overlapping"),
    (["pretrain.observation_dims=[[0,72]]"], "reach past the 71-dim observation of task kitchen"),
])
def test_bad_ranges_are_one_line_errors(tmp_path, sets, message):
    with pytest.raises(ConfigError, match=message):
        _plan("kitchen", sets, tmp_path)


@pytest.mark.parametrize("ranges", [[[0, 9], [5, 12]], [[0, 72]], [[3, 3]], []])
def test_a_task_file_with_bad_ranges_is_refused(ranges):
    from pydantic import ValidationError

    from spaars_robot.config.tasks import TaskSpec

    fields = load_task("kitchen").model_dump() | {"network_observation": ranges}
    with pytest.raises(ValidationError, match="network_observation"):
        TaskSpec.model_validate(fields)


def test_a_nonfinite_value_in_an_ignored_dim_reaches_no_network():
    norm = ObsNormalizer(torch.zeros(4), torch.ones(4), keep=kept_dims(((0, 2),), 4))
    obs = torch.tensor([[1.0, 2.0, float("nan"), float("inf")]])
    assert norm(obs).tolist() == [[1.0, 2.0, 0.0, 0.0]]
