"""`serve --metrics-port` says what it serves: `spaars_build_info` over the real HTTP endpoint of a real server.

Without it, a Grafana panel or an alert cannot tell which bundle, wire protocol and package a robot ran when
a number moved (a rollout, a rollback), nor two robots running different bundles apart.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib.metadata import version

import numpy as np
import pytest

import spaars_robot
from spaars_robot.config.tasks import load_task
from spaars_robot.export.bundle import load_bundle
from spaars_robot.export.onnx_export import export_bundle
from spaars_robot.export.stack import random_stack
from spaars_robot.runtime.client import Client
from spaars_robot.runtime.protocol import PROTOCOL_MAJOR, PROTOCOL_MINOR
from spaars_robot.runtime.service import wait_for_server
from spaars_robot.runtime.sim_client import task_schema
from tests.runtime.runtime_helpers import free_port, hopper_info

pytestmark = pytest.mark.timeout(90)


def scrape(port: int, server: subprocess.Popen, timeout_s: float = 30.0) -> str:
    """GET /metrics, retrying while the server process starts (it serves metrics before the action socket)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except (urllib.error.URLError, ConnectionError):
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "metrics endpoint never came up"
            time.sleep(0.1)


def test_serve_exports_build_info_and_watchdog_state(tmp_path) -> None:
    bundle = tmp_path / "hopper-info-test"
    export_bundle(random_stack(11, 3, seed=0), hopper_info(), bundle)
    endpoint, metrics_port = f"tcp://127.0.0.1:{free_port()}", free_port()
    server = subprocess.Popen([sys.executable, "-m", "spaars_robot.cli", "serve", "--bundle", str(bundle), "--bind",
                               endpoint, "--metrics-port", str(metrics_port)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "300"})
    try:
        before = scrape(metrics_port, server)
        with Client(endpoint, task_schema(load_task("hopper")), timeout_s=1.0) as client:
            wait_for_server(client, server)
            for i in range(5):
                client.act(np.full(11, 0.01 * i, np.float32))
        after = scrape(metrics_port, server)
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=15)
    assert server.returncode == 0, err

    (info_line,) = [line for line in after.splitlines() if line.startswith("spaars_build_info{")]
    labels = dict(re.findall(r'(\w+)="([^"]*)"', info_line))
    assert info_line.endswith(" 1.0")
    assert labels == {"bundle": "hopper-info-test", "bundle_sha256": load_bundle(bundle).sha256, "task": "hopper",
                      "protocol_version": f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}",
                      "version": spaars_robot.__version__}
    assert labels["version"] == version("spaars-robot")  # the installed distribution's, not a second number
    # nothing reported before the first request; then the controller's state (a plain client reports running)
    assert 'spaars_watchdog_state{state="running"} 0.0' in before
    assert 'spaars_watchdog_state{state="running"} 1.0' in after
    assert 'spaars_watchdog_state{state="safe_stop"} 0.0' in after
