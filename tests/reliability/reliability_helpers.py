"""Helpers for the reliability suite: a real `spaars-robot serve` process, raw sockets, and the figures file.

Every test here runs against the server as deployed (a separate process started through the CLI,
real ZeroMQ sockets, real onnxruntime, the bundle's safety spec), because the faults being tested
(kill -9, SIGSTOP, malformed frames) are about processes and sockets, not about functions.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import zmq

from spaars_robot.config.tasks import load_task
from spaars_robot.runtime import protocol as p
from spaars_robot.runtime.client import Client
from spaars_robot.runtime.service import wait_for_server
from spaars_robot.runtime.sim_client import task_schema

OBS_DIM, ACT_DIM = 11, 3


def hopper_schema() -> p.Schema:
    """What a hopper controller announces: the task's element names, as export writes them into the bundle."""
    return task_schema(load_task("hopper"))


class ServeProcess:
    """`spaars-robot serve` in its own process; `ready()` waits for a handshake, `stop()` returns its stats."""

    def __init__(self, bundle: Path, endpoint: str, *extra: str) -> None:
        self.bundle, self.endpoint, self.extra = bundle, endpoint, extra
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "400"}
        self.proc = subprocess.Popen([sys.executable, "-m", "spaars_robot.cli", "serve", "--bundle", str(bundle),
                                      "--bind", endpoint, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ready(self, timeout_s: float = 60.0) -> None:
        with Client(self.endpoint, hopper_schema(), timeout_s=0.5) as client:
            wait_for_server(client, self.proc, timeout_s)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> dict:
        """SIGTERM, wait, and parse the `stopped: {json}` line the server prints on a clean exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                out, err = self.proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, err = self.proc.communicate()
        else:
            out, err = self.proc.communicate()
        for line in out.splitlines():
            if line.startswith("stopped: "):
                return json.loads(line.removeprefix("stopped: "))
        raise AssertionError(f"no stats from serve (exit {self.proc.returncode}):\n{out}\n{err}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


class RawPeer:
    """A DEALER that sends hand-made frames (no Client checks) and reads one reply frame."""

    def __init__(self, endpoint: str, context: zmq.Context | None = None) -> None:
        self.socket = (context or zmq.Context.instance()).socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.seq = 1_000_000

    def exchange(self, frames: list[bytes], timeout_ms: int = 5000) -> bytes | None:
        self.socket.send_multipart(frames)
        if not self.socket.poll(timeout_ms):
            return None
        return self.socket.recv_multipart()[-1]

    def hello(self) -> p.Message:
        return p.decode(self.exchange([p.encode(p.Hello(schema=hopper_schema(), client="fuzzer"))]))

    def good_act(self) -> p.Message:
        self.seq += 1
        return p.decode(self.exchange([p.encode(p.Act(self.seq, np.full(OBS_DIM, 0.1, np.float32)))]))

    def close(self) -> None:
        self.socket.close(linger=0)


def write_figures(figures: dict, path: Path) -> None:
    """Merge this run's figures into `path` (tests may run in any subset; keep the other sections)."""
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update(figures)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
