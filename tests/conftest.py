"""Shared fixtures: a tiny real Hopper dataset made by the real collection code, and CLI helpers."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
REPO = Path(__file__).resolve().parents[1]


# Test files that run for minutes, started first: `make test` hands whole files to two processes in collection order,
# so a long file collected last (tests/sweep: Ray's start-up plus a preempted trial, ~4 min) ran alone at the end.
FIRST = ("tests/sweep/test_sweep_backends.py", "tests/train/test_algorithms_smoke.py", "tests/envs/test_robotics_cli.py",
         "tests/data/test_collect_resume.py", "tests/train/test_pretrain_resume.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(str(item.path).removeprefix(f"{REPO}/"), len(FIRST)))  # stable sort


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """In-process torch on one thread, as `train` runs by default: the suite runs two test processes at once on
    2 cores (`make test`: pytest-xdist -n 2), and two torch thread pools each sized to the machine wait on each
    other and run several times slower (measured ~10x for a SAC update loop on a busy 2-core VM)."""
    import torch

    torch.set_num_threads(1)


def run_cli(*args: str, env: dict | None = None, timeout: float = 300, check: bool = True,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `spaars-robot ...` as a real subprocess (CleanRL-style smoke through the CLI)."""
    full_env = {**os.environ, "MUJOCO_GL": "egl", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "spaars_robot.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd or REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"spaars-robot {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def tiny_hopper_dataset(tmp_path_factory) -> Path:
    """3k transitions from a briefly trained SAC behaviour policy on real MuJoCo Hopper."""
    root = tmp_path_factory.mktemp("datasets")
    run_cli("data", "collect", "--task", "hopper", "--quality", "medium", "--steps", "3000", "--train-budget", "2000",
            "--eval-every", "1000", "--random-steps", "500", "--threads", "1", "--root", str(root))
    return root / "spaars" / "hopper-medium-v0"
