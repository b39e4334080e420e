"""A run's scalars: pretraining's losses in TensorBoard beside the online ones, with no step logged twice after a
resume (read back with TensorBoard's own EventAccumulator), and the optional Weights & Biases logger (offline mode,
read back from the run file it writes; the clear error without wandb; wandb never imported unless asked for)."""
from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from spaars_robot.data.files import safe_torch_load
from tests.conftest import run_cli

PRETRAIN_POINTS = list(range(10, 201, 10))  # smoke: 200 updates, a point every 200 // 20


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def steps(series: list[tuple[int, float]]) -> list[int]:
    return [step for step, _ in series]


def smoke(dataset: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["train", "--task", "hopper", "--dataset", str(dataset), "--protocol", "smoke", "--run-dir", str(run_dir),
            "--results-dir", str(run_dir.parent / "results"), *extra]


def extend_run(run_dir: Path, env_steps: int) -> None:
    """Let a finished run continue: what a resume after a kill at its last checkpoint does, deterministically."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["online"]["env_steps"] = env_steps
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def test_pretraining_losses_go_to_tensorboard_and_a_resume_logs_no_step_twice(tiny_hopper_dataset, tmp_path):
    env = {"SPAARS_CACHE": str(tmp_path / "cache")}
    run = tmp_path / "run"
    run_cli(*smoke(tiny_hopper_dataset, run, "--set", "online.env_steps=400"), env=env)
    live = scalars(run / "tb" / "pretrain")  # computed by this run: logged while it ran
    history = json.loads((run / "pretrain.json").read_text())["history"]
    assert {"pretrain/cvae/recon", "pretrain/iql/critic_loss", "pretrain/iql/value_loss"} <= live.keys()
    for tag, series in live.items():
        assert steps(series) == [p["step"] for p in history if tag.removeprefix("pretrain/") in p], tag
    assert steps(live["pretrain/cvae/recon"]) == PRETRAIN_POINTS
    assert [v for _, v in live["pretrain/cvae/recon"]] == pytest.approx([p["cvae/recon"] for p in history])
    assert steps(scalars(run / "tb")["eval/normalized_mean"]) == [0, 200, 400]

    extend_run(run, 600)
    assert safe_torch_load(run / "checkpoint.pt")["step"] == 400
    run_cli("train", "--resume", str(run), "--results-dir", str(tmp_path / "results"), env=env)
    online = scalars(run / "tb")
    assert steps(online["eval/normalized_mean"]) == [0, 200, 400, 600]
    assert steps(online["online/critic_loss"]) == [200, 400, 600]
    for tag, series in online.items():
        assert len(set(steps(series))) == len(series), f"{tag} logged a step twice: {steps(series)}"
    assert scalars(run / "tb" / "pretrain") == live  # the resume read the cache and rewrote the same points once

    other = tmp_path / "other"  # another algorithm on the same pretraining: a cache hit, the same curves
    run_cli(*smoke(tiny_hopper_dataset, other, "--algo", "iql", "--set", "online.env_steps=200"), env=env)
    assert json.loads((other / "pretrain.json").read_text())["cache_hit"] is True
    assert scalars(other / "tb" / "pretrain") == live


class Killed(Exception):
    """Stands in for kill -9 half-way through pretraining (in-process, so the test stays fast and exact)."""


def test_pretraining_killed_mid_way_logs_each_point_once(tiny_hopper_dataset, tmp_path):
    from spaars_robot.config.training import resolve_config
    from spaars_robot.data.dataset import OfflineDataset
    from spaars_robot.train.pretrain import pretrain
    from spaars_robot.train.scalars import ScalarLog

    dataset = OfflineDataset.load(tiny_hopper_dataset)
    cfg = resolve_config("smoke", {"task": "hopper", "dataset": "tiny"}).pretrain
    partial = tmp_path / "cache" / "key.partial.pt"
    partial.parent.mkdir()
    first = ScalarLog(tmp_path / "run")

    def dies_at_150(step: int, values: dict) -> None:
        first.pretrain(step, values)  # flushed per point: on disk as after a kill
        if step == 150:
            raise Killed

    with pytest.raises(Killed):
        pretrain(dataset, cfg, 0, checkpoint=partial, checkpoint_every=100, scalars=dies_at_150)
    assert safe_torch_load(partial)["step"] == 100  # points 110-150 were logged after the last checkpoint
    second = ScalarLog(tmp_path / "run")
    _, info = pretrain(dataset, cfg, 0, checkpoint=partial, checkpoint_every=100, scalars=second.pretrain)
    second.close()
    assert info["resumed_at_step"] == 100
    logged = scalars(tmp_path / "run" / "tb" / "pretrain")
    assert steps(logged["pretrain/cvae/recon"]) == PRETRAIN_POINTS
    _, uninterrupted = pretrain(dataset, cfg, 0)
    assert [v for _, v in logged["pretrain/cvae/recon"]] == pytest.approx(
        [p["cvae/recon"] for p in uninterrupted["history"]])


def wandb_history(run_file: Path) -> list[dict]:
    """The `history` records of a W&B run file (`run-<id>.wandb`: W&B's LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    raw, block, pos, records, pending = run_file.read_bytes(), 32768, 7, [], b""
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a record header never straddles a block: the tail is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        data, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # full record, or the last piece of one
            records.append(pending + data)
            pending = b""
        elif kind in (2, 3):  # first / middle piece
            pending += data
    rows = []
    for data in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def test_wandb_offline_run_holds_the_pretraining_and_online_scalars(tiny_hopper_dataset, tmp_path):
    pytest.importorskip("wandb")
    run = tmp_path / "run"
    run_cli(*smoke(tiny_hopper_dataset, run, "--algo", "iql", "--wandb", "spaars-test"),
            env={"SPAARS_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    (run_file,) = run.glob("wandb/offline-run-*/run-*.wandb")
    assert run_file.stem == "run-" + (run / "wandb_run_id").read_text().strip()
    rows = wandb_history(run_file)
    pretrain = [r for r in rows if "pretrain/update" in r]
    online = [r for r in rows if "env_step" in r]
    assert [r["pretrain/update"] for r in pretrain] == PRETRAIN_POINTS
    assert "pretrain/cvae/recon" in pretrain[0]
    assert [r["env_step"] for r in online if "iql/critic_loss" in r] == [200, 400, 600]
    evals = [r for r in online if "eval/normalized_mean" in r]
    summary = json.loads((run / "summary.json").read_text())
    assert [(r["env_step"], r["eval/normalized_mean"]) for r in evals] == [
        (point["step"], pytest.approx(point["normalized_mean"])) for point in summary["curve"]]


def test_without_wandb_installed_train_wandb_is_a_one_line_error(tmp_path):
    fake = tmp_path / "site" / "wandb"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('wandb is not installed here (test stand-in)')\n")
    proc = run_cli("train", "--task", "hopper", "--algo", "sac", "--protocol", "smoke", "--wandb", "p",
                   "--runs-root", str(tmp_path / "runs"), env={"PYTHONPATH": str(fake.parent)}, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "wandb package is not installed" in proc.stderr
    assert "pip install 'spaars-robot[wandb]'" in proc.stderr and not (tmp_path / "runs").exists()


def test_a_run_without_wandb_never_imports_it(tmp_path):
    """In the process that trains (sac: no pretraining, seconds), with wandb importable or not."""
    import subprocess

    from tests.conftest import REPO

    script = ("import sys\nfrom spaars_robot.cli import main\n"
              f"sys.argv = ['spaars-robot', 'train', '--task', 'hopper', '--algo', 'sac', '--protocol', 'smoke', "
              f"'--set', 'online.env_steps=200', '--run-dir', {str(tmp_path / 'run')!r}, "
              f"'--results-dir', {str(tmp_path / 'results')!r}]\n"
              "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
              "print('wandb imported:', 'wandb' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "wandb imported: False" in proc.stdout
    assert (tmp_path / "run" / "summary.json").exists()
