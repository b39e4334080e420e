"""`data collect` killed with SIGKILL resumes to a dataset bit-identical to an uninterrupted run.

Real subprocesses through the console entry point, tiny budgets: 2k behaviour steps (1k of them
SAC updates), checkpoints every 400 steps, rollout shards of 1.5k transitions.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from spaars_robot.data.episodes import iter_episodes, read_metadata

ROLLOUT_STEPS = 12_000


def collect_cmd(root: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "spaars_robot.cli",
        "data",
        "collect",
        "--task",
        "hopper",
        "--quality",
        "medium",
        "--steps",
        str(ROLLOUT_STEPS),
        "--train-budget",
        "2000",
        "--random-steps",
        "1000",
        "--eval-every",
        "1000",
        "--checkpoint-every",
        "400",
        "--shard-steps",
        "1500",
        "--threads",
        "1",
        "--root",
        str(root),
    ]


def run_to_end(root: Path) -> None:
    result = subprocess.run(collect_cmd(root), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


def kill_when(root: Path, ready: Callable[[], bool], what: str) -> None:
    """Start a collection, SIGKILL it as soon as `ready()` holds, and check it was still working."""
    proc = subprocess.Popen(collect_cmd(root), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while not ready():
            assert proc.poll() is None, (
                f"collection ended before {what}: {proc.stderr.read().decode()[-2000:]}"
            )
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)
        assert proc.poll() is None, f"collection finished before it could be killed at {what}"
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()


def test_killed_collection_resumes_bit_identically(tmp_path: Path, digest_arrays) -> None:
    reference_root, resumed_root = tmp_path / "reference", tmp_path / "resumed"
    run_to_end(reference_root)
    reference = reference_root / "spaars" / "hopper-medium-v0"

    behaviour = resumed_root / "spaars" / "_behaviour" / "hopper-seed0"
    shards = resumed_root / "spaars" / "_work" / "hopper-medium-seed0"
    dataset = resumed_root / "spaars" / "hopper-medium-v0"

    def sac_checkpoint_written() -> bool:
        """A checkpoint newer than the first evaluation: SAC updates (optimiser state) are in it."""
        state, first_eval = behaviour / "state.pt", behaviour / "policy_step0001000.pt"
        try:
            return state.stat().st_mtime_ns > first_eval.stat().st_mtime_ns
        except FileNotFoundError:
            return False

    kill_when(resumed_root, sac_checkpoint_written, "a checkpoint during SAC training")
    step = int(torch.load(behaviour / "state.pt", weights_only=True)["step"])
    assert 1000 < step < 2000
    assert not dataset.exists() and not (shards / "shard_00000.npz").exists()

    kill_when(resumed_root, lambda: (shards / "shard_00000.npz").exists(), "the first rollout shard")
    assert int(torch.load(behaviour / "state.pt", weights_only=True)["step"]) == 2000
    assert not dataset.exists(), "an interrupted collection must not leave a complete-looking dataset"
    assert len(list(shards.glob("shard_*.npz"))) < ROLLOUT_STEPS // 1500

    run_to_end(resumed_root)
    assert digest_arrays(dataset) == digest_arrays(reference)
    meta, ref_meta = read_metadata(dataset), read_metadata(reference)
    for key in ("total_episodes", "total_steps", "spaars_behaviour_step", "spaars_behaviour_eval_normalized"):
        assert meta[key] == ref_meta[key]
    assert sum(len(ep) for ep in iter_episodes(dataset)) == ROLLOUT_STEPS
    assert not shards.exists()
    # the kept behaviour checkpoints are identical too, so the dataset can be regenerated from them
    for policy in sorted((reference_root / "spaars" / "_behaviour" / "hopper-seed0").glob("policy_step*.pt")):
        a = torch.load(policy, weights_only=True)
        b = torch.load(behaviour / policy.name, weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a)
