"""Running the action server as a child process: start, wait for its first answer, stop cleanly.

Used by `demo` (the main job) and by tests that need a real server process; kept out of the command
module so the lifecycle has one implementation, whatever starts it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from spaars_robot.errors import SpaarsError


def start_server_process(bundle: Path, endpoint: str, extra_args: tuple[str, ...] = ()) -> subprocess.Popen:
    """`serve --bundle BUNDLE --bind ENDPOINT [extra_args]` as a child process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "spaars_robot.cli", "serve", "--bundle", str(bundle),
                             "--bind", endpoint, *extra_args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_server(client, server: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Handshake until the server answers; a server that dies first is reported with its own error line."""
    from spaars_robot.runtime.client import ServerUnavailable

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SpaarsError(f"server exited with {server.returncode}: {server.stderr.read().strip()}")
        try:
            client.connect(timeout_s=0.5)
            return
        except ServerUnavailable:
            time.sleep(0.05)
    raise SpaarsError(f"server did not answer within {timeout_s:g} s")


def stop_server_process(server: subprocess.Popen, timeout_s: float = 5.0) -> int:
    """SIGTERM (the server finishes its current request and closes its socket), then SIGKILL if it hangs."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout_s)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return server.returncode
