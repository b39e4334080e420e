"""`serve` stops cleanly however its stop signals arrive: a supervisor or `timeout` that forwards signals, and a user
pressing Ctrl-C again, send several in a burst (a real server process, real signals)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from spaars_robot.config.tasks import load_task
from spaars_robot.export.onnx_export import export_bundle
from spaars_robot.export.stack import random_stack
from spaars_robot.runtime.client import Client
from spaars_robot.runtime.service import wait_for_server
from spaars_robot.runtime.sim_client import task_schema
from tests.runtime.runtime_helpers import free_port, hopper_info

pytestmark = pytest.mark.timeout(120)


def test_a_burst_of_sigint_and_sigterm_stops_serve_with_its_summary(tmp_path) -> None:
    """Found with `pkill` matching both `timeout` and the server it runs (SIGINT, then SIGTERM twice): the server hung
    for good, its signal handlers nested on the stop Event's lock. Each round streams both signals until it exits."""
    bundle = tmp_path / "hopper"
    export_bundle(random_stack(11, 3, seed=0), hopper_info(), bundle)
    for attempt in range(3):
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        server = subprocess.Popen([sys.executable, "-m", "spaars_robot.cli", "serve", "--bundle", str(bundle),
                                   "--bind", endpoint], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "COLUMNS": "300"})
        try:
            with Client(endpoint, task_schema(load_task("hopper")), timeout_s=1.0, name="signals") as client:
                wait_for_server(client, server)
                client.act(np.zeros(11, np.float32))
            deadline, sent = time.monotonic() + 15.0, 0
            while server.poll() is None and time.monotonic() < deadline:  # a stream, until it exits or hangs
                server.send_signal(signal.SIGINT if sent % 2 else signal.SIGTERM)
                sent += 1
            out, err = server.communicate(timeout=5)
        finally:
            if server.poll() is None:
                server.kill()
                server.communicate()
        # the clean stop is the summary line and no traceback; a signal of the stream that lands after the
        # interpreter has restored the default handlers (finalization) may still end the process by that signal
        assert "stopped: " in out, f"round {attempt}: no clean-exit summary in {out!r}; stderr {err[-2000:]}"
        assert "Traceback" not in err and "RecursionError" not in err, f"round {attempt}: {err[-2000:]}"
        assert server.returncode in (0, -signal.SIGINT, -signal.SIGTERM), f"round {attempt}: {server.returncode}"
