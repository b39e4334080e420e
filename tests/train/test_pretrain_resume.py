"""Offline pretraining killed half-way resumes from its partial checkpoint and ends bit-identical to an
uninterrupted pretraining; an unreadable partial checkpoint is set aside and pretraining starts again."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import torch

from spaars_robot.config.training import PretrainConfig
from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.data.files import safe_torch_load
from spaars_robot.train.pretrain import cache_key, pretrain_cached
from tests.conftest import REPO, run_cli

STEPS = 3000
LONG_PRETRAIN = ["--set", f"pretrain.steps={STEPS}", "--set", "eval.checkpoint_every=200"]
VOLATILE = {"seconds", "updates_per_second", "cache", "cache_hit", "resumed_at_step"}


def _train(dataset, run_dir):
    return ["train", "--task", "hopper", "--dataset", str(dataset), "--protocol", "smoke", "--run-dir", str(run_dir),
            "--results-dir", str(run_dir.parent / "results"), *LONG_PRETRAIN]


def _metrics(run_dir):
    with open(run_dir / "metrics.csv") as fh:
        return [{k: v for k, v in row.items() if k not in {"wall_seconds", "env_steps_per_second"}}
                for row in csv.DictReader(fh)]


def _stable(pretrain_json):
    return {k: v for k, v in json.loads(pretrain_json.read_text()).items() if k not in VOLATILE}


def test_pretraining_killed_mid_way_resumes_to_the_same_networks(tiny_hopper_dataset, tmp_path):
    full_cache, killed_cache = tmp_path / "cache_full", tmp_path / "cache_killed"
    run_cli(*_train(tiny_hopper_dataset, tmp_path / "full"), env={"SPAARS_CACHE": str(full_cache)})
    proc = subprocess.Popen([sys.executable, "-m", "spaars_robot.cli", *_train(tiny_hopper_dataset, tmp_path / "killed")],
                            cwd=REPO, env={**os.environ, "MUJOCO_GL": "egl", "SPAARS_CACHE": str(killed_cache)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(killed_cache.glob("*.partial.pt")):
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partials = list(killed_cache.glob("*.partial.pt"))
    assert len(partials) == 1, "no partial pretraining checkpoint was written before the kill"
    killed_at = safe_torch_load(partials[0])["step"]
    assert 0 < killed_at < STEPS, "pretraining finished before it could be killed"
    assert not (killed_cache / partials[0].name.replace(".partial.pt", ".pt")).exists()

    run_cli("train", "--resume", str(tmp_path / "killed"), "--results-dir", str(tmp_path / "results"),
            env={"SPAARS_CACHE": str(killed_cache)})
    assert not list(killed_cache.glob("*.partial.pt")), "the partial checkpoint outlived the finished pretraining"
    resumed_info = json.loads((tmp_path / "killed" / "pretrain.json").read_text())
    assert resumed_info["resumed_at_step"] >= killed_at
    assert _stable(tmp_path / "killed" / "pretrain.json") == _stable(tmp_path / "full" / "pretrain.json")
    key = partials[0].name.removesuffix(".partial.pt")
    full, resumed = (safe_torch_load(c / f"{key}.pt")["nets"] for c in (full_cache, killed_cache))
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), name
    # the online phase that follows is the same too
    assert _metrics(tmp_path / "killed") == _metrics(tmp_path / "full")
    full_w = safe_torch_load(tmp_path / "full" / "checkpoint.pt")["agent"]["nets"]
    resumed_w = safe_torch_load(tmp_path / "killed" / "checkpoint.pt")["agent"]["nets"]
    for name in full_w:
        assert torch.equal(full_w[name], resumed_w[name]), name


def test_unreadable_partial_checkpoint_is_set_aside_and_pretraining_restarts(tiny_hopper_dataset, tmp_path):
    dataset = OfflineDataset.load(tiny_hopper_dataset)
    cfg = PretrainConfig(steps=60, batch_size=32, hidden=(16, 16), cvae_hidden=(16, 16), support_samples=200)
    clean, _ = pretrain_cached(dataset, cfg, 3, tmp_path / "clean", checkpoint_every=20)
    cache = tmp_path / "damaged"
    cache.mkdir()
    partial = cache / f"{cache_key(dataset, 3, cfg)}.partial.pt"
    partial.write_bytes(b"PK\x03\x04 truncated by a power cut")
    messages: list[str] = []
    nets, info = pretrain_cached(dataset, cfg, 3, cache, log=messages.append, checkpoint_every=20)
    assert any("unreadable" in m and "starts from step 0" in m for m in messages), messages
    assert (cache / (partial.name + ".corrupt")).read_bytes().startswith(b"PK\x03\x04 truncated")
    assert not partial.exists() and "resumed_at_step" not in info
    for name, tensor in clean.state_dict().items():
        assert torch.equal(tensor, nets.state_dict()[name]), name
