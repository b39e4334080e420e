"""`serve --record` writes one MCAP record per served request, readable after a clean SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from spaars_robot.config.tasks import load_task
from spaars_robot.export.onnx_export import export_bundle
from spaars_robot.export.stack import random_stack
from spaars_robot.runtime.client import Client
from spaars_robot.runtime.service import wait_for_server
from spaars_robot.runtime.sim_client import task_schema
from spaars_robot.telemetry.mcap_log import read_mcap
from tests.runtime.runtime_helpers import free_port, hopper_info

pytestmark = pytest.mark.timeout(90)


def test_serve_records_every_request_to_mcap(tmp_path) -> None:
    bundle = tmp_path / "hopper"
    export_bundle(random_stack(11, 3, seed=0), hopper_info(), bundle)
    endpoint, recording = f"tcp://127.0.0.1:{free_port()}", tmp_path / "run.mcap"
    server = subprocess.Popen([sys.executable, "-m", "spaars_robot.cli", "serve", "--bundle", str(bundle), "--bind",
                               endpoint, "--record", str(recording)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "COLUMNS": "300"})
    try:
        with Client(endpoint, task_schema(load_task("hopper")), timeout_s=1.0, name="recorder-test") as client:
            wait_for_server(client, server)
            replies = [client.act(np.full(11, 0.01 * i, np.float32)) for i in range(25)]
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=15)
    assert server.returncode == 0, err
    assert f"recording {recording}" in out
    records = list(read_mcap(recording))
    assert [r.sequence for r in records] == [r.seq for r in replies]
    assert all(r.client.startswith("recorder-test#") and r.latency_us["total"] > 0 for r in records)
    assert np.allclose([r.action for r in records], [r.action for r in replies])
