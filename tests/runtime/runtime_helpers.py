"""Helpers shared by the runtime tests (a uniquely named module, so it never collides with other conftests)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from spaars_robot.export.stack import PolicyStack, RunExportInfo, SupportCalibration
from spaars_robot.runtime.server import ActionServer

os.environ.setdefault("MUJOCO_GL", "egl")
OBS_DIM, ACT_DIM = 11, 3


def hopper_info(**overrides) -> RunExportInfo:
    """A hand-built RunExportInfo for Hopper; the calibration obs are real-looking small states."""
    rng = np.random.default_rng(1)
    fields = {
        "task": "hopper", "obs_dim": OBS_DIM, "action_dim": ACT_DIM, "control_rate_hz": 125.0,
        "gate_threshold": 0.0, "gate_hysteresis": 0.05, "support_threshold": 10.0,
        "support_calibration": SupportCalibration(quantile=0.99, dataset="spaars/hopper-medium-v0",
                                               dataset_sha256="0" * 64, samples=1000),
        "run_dir": "runs/test", "algo": "spaars", "seed": 0, "train_command": "spaars-robot train --task hopper",
        "config": {"lr": 3e-4}, "calibration_obs": (0.1 * rng.standard_normal((32, OBS_DIM))).tolist(),
    }
    fields.update(overrides)
    return RunExportInfo(**fields)


@contextmanager
def serving(server: ActionServer) -> Iterator[ActionServer]:
    """Run `server` in a thread for the duration of the block, then stop and close it."""
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop, 20), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(5)
        server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server_process(bundle_path: Path, endpoint: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "spaars_robot.cli", "serve", "--bundle", str(bundle_path),
                             "--bind", endpoint], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def torch_outputs(stack: PolicyStack, obs: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in stack(torch.as_tensor(obs, dtype=torch.float32))]
