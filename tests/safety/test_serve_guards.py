"""The server's guards, end to end: CurveZMQ through the ActionServer with real sockets, the bundle
signature check and the safety-spec binding through the real `serve` CLI (one-line refusals)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zmq

from spaars_robot.config.tasks import load_task
from spaars_robot.errors import SafetySpecMismatch
from spaars_robot.export.bundle import load_bundle
from spaars_robot.export.onnx_export import export_bundle
from spaars_robot.export.safety_binding import bind_spec
from spaars_robot.export.stack import random_stack
from spaars_robot.runtime.client import Client, ClientCurve, DeadlineMissed
from spaars_robot.runtime.server import ActionServer
from spaars_robot.runtime.service import wait_for_server
from spaars_robot.runtime.sim_client import task_schema
from spaars_robot.security.keys import create_curve_keypair, write_curve_keys
from spaars_robot.security.signing import sign_manifest, write_signing_key
from tests.runtime.runtime_helpers import free_port, hopper_info, serving

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("guards") / "hopper-guards"
    export_bundle(random_stack(11, 3, seed=0), hopper_info(), out)
    return out


def serve_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `serve` expecting it to refuse (exit 2) before binding anything."""
    return subprocess.run([sys.executable, "-m", "spaars_robot.cli", "serve", *args], check=False, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "300"}, cwd=REPO)


def test_curve_server_serves_allow_listed_client_and_rejects_others(bundle_dir, tmp_path) -> None:
    write_curve_keys(tmp_path, ["arm1"])
    create_curve_keypair(tmp_path / "outsider", "intruder")
    hopper = task_schema(load_task("hopper"))
    context = zmq.Context()
    obs = np.zeros(11, np.float32)
    try:
        server = ActionServer(load_bundle(bundle_dir), ["tcp://127.0.0.1:*"], context=context, curve_keys=tmp_path)
        with serving(server):
            endpoint = server.bound[0]
            allowed = ClientCurve(tmp_path / "arm1.key_secret", tmp_path / "server.key")
            with Client(endpoint, hopper, timeout_s=2.0, curve=allowed, context=context) as client:
                assert client.act(obs).action.shape == (3,)
            intruder = ClientCurve(tmp_path / "outsider" / "intruder.key_secret", tmp_path / "server.key")
            for curve in (intruder, None):  # a valid key pair the server does not list, and plain text
                with Client(endpoint, hopper, timeout_s=0.5, curve=curve, context=context) as client, \
                        pytest.raises(DeadlineMissed):
                    client.act(obs)
            assert server.stats()["requests"] == 1 and server.stats()["sessions"] == 1
    finally:
        context.term()


def test_trusted_key_refuses_unsigned_bundle_and_serves_signed_one(bundle_dir, tmp_path) -> None:
    bundle = tmp_path / "signed"
    shutil.copytree(bundle_dir, bundle)
    secret, public = write_signing_key(tmp_path / "keys")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    refused = serve_cli("--bundle", str(bundle), "--bind", endpoint, "--trusted-key", str(public))
    assert refused.returncode == 2 and "not signed" in refused.stderr and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    sign_manifest(bundle / "manifest.json", secret)
    proc = subprocess.Popen([sys.executable, "-m", "spaars_robot.cli", "serve", "--bundle", str(bundle), "--bind",
                             endpoint, "--trusted-key", str(public)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        with Client(endpoint, task_schema(load_task("hopper")), timeout_s=0.5) as client:
            wait_for_server(client, proc)  # handshake until up; a server that dies first fails with its stderr
            assert client.act(np.zeros(11, np.float32)).action.shape == (3,)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert "signature verified" in out


def test_spec_binding_refuses_other_dims_and_changed_files(bundle_dir, tmp_path) -> None:
    manifest = load_bundle(bundle_dir).manifest
    assert manifest.safety.robot == "hopper" and bind_spec(manifest, None).override is None
    with pytest.raises(SafetySpecMismatch, match="action dim 6"):
        bind_spec(manifest, "walker2d")
    edited = tmp_path / "hopper.yaml"
    edited.write_text((REPO / "safety" / "hopper.yaml").read_text().replace("rate_limit: 1.0", "rate_limit: 0.5"))
    with pytest.raises(SafetySpecMismatch, match="validated against hopper"):
        bind_spec(manifest, edited)
    assert "sha256" in bind_spec(manifest, edited, allow_spec_change=True).override
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    for args, message in ((["--safety", "walker2d"], "action dim 6"),
                          (["--safety", str(edited)], "--allow-spec-change")):
        result = serve_cli("--bundle", str(bundle_dir), "--bind", endpoint, *args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_busy_poll_server_pinned_to_a_cpu_serves_and_stops_on_sigterm(bundle_dir) -> None:
    cpu = max(os.sched_getaffinity(0))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "spaars_robot.cli", "serve", "--bundle", str(bundle_dir), "--bind",
                             endpoint, "--busy-poll", "--cpu", str(cpu)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "300"})
    try:
        with Client(endpoint, task_schema(load_task("hopper")), timeout_s=0.5) as client:
            wait_for_server(client, proc)  # handshake until up; a server that dies first fails with its stderr
            replies = [client.act(np.zeros(11, np.float32)) for _ in range(50)]
        assert all(r.action.shape == (3,) and np.isfinite(r.action).all() for r in replies)
        assert os.sched_getaffinity(proc.pid) == {cpu}
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert f"busy-poll serving thread on CPU(s) [{cpu}]" in out and '"requests": 50' in out


def test_serve_refuses_a_cpu_it_may_not_run_on(bundle_dir) -> None:
    refused = serve_cli("--bundle", str(bundle_dir), "--bind", f"tcp://127.0.0.1:{free_port()}", "--cpu", "4096")
    assert refused.returncode == 2 and "cannot pin to CPU(s) [4096]" in refused.stderr
    assert "Traceback" not in refused.stderr
