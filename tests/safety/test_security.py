"""CurveZMQ allow-list over real sockets, ed25519 manifest signatures, key files, and `spaars-robot keys`."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st
from zmq.utils.monitor import recv_monitor_message

from spaars_robot.errors import BundleSignatureError, SecurityError
from spaars_robot.security.keys import (
    ALLOW_LIST_DIR,
    configure_curve_client,
    configure_curve_server,
    create_curve_keypair,
    load_curve_keypair,
    start_allow_list_authenticator,
    write_curve_keys,
)
from spaars_robot.security.signing import (
    parse_hex,
    sign_manifest,
    verify_manifest,
    write_signing_key,
)


@pytest.fixture()
def curve_server(tmp_path: Path):
    """A CURVE ROUTER on 127.0.0.1 that allows only the client 'robot1'."""
    write_curve_keys(tmp_path, ["robot1"])
    create_curve_keypair(tmp_path / "outsider", "intruder")  # a valid key pair the server does not know
    context = zmq.Context()
    authenticator = start_allow_list_authenticator(context, tmp_path / ALLOW_LIST_DIR)
    server = context.socket(zmq.ROUTER)
    server.linger = 0
    configure_curve_server(server, tmp_path / "server.key_secret")
    port = server.bind_to_random_port("tcp://127.0.0.1")
    yield context, server, f"tcp://127.0.0.1:{port}", tmp_path
    server.close()
    authenticator.stop()
    context.term()


def make_client(context: zmq.Context, endpoint: str, secret: Path | None, server_public: Path | None):
    client = context.socket(zmq.DEALER)
    client.linger = 0
    monitor = client.get_monitor_socket()
    if secret is not None:
        configure_curve_client(client, secret, server_public)
    client.connect(endpoint)
    return client, monitor


def wait_for_event(monitor: zmq.Socket, wanted: set[int], timeout_s: float = 3.0) -> int | None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if monitor.poll(100):
            event = recv_monitor_message(monitor)["event"]
            if event in wanted:
                return event
    return None


def test_allow_listed_client_is_served(curve_server) -> None:
    context, server, endpoint, keys = curve_server
    client, monitor = make_client(context, endpoint, keys / "robot1.key_secret", keys / "server.key")
    client.send(b"ping")
    assert server.poll(3000), "allow-listed client's request never reached the server"
    identity, payload = server.recv_multipart()
    assert payload == b"ping"
    server.send_multipart([identity, b"pong"])
    assert client.poll(3000) and client.recv() == b"pong"
    assert wait_for_event(monitor, {zmq.EVENT_HANDSHAKE_SUCCEEDED}, 0.5) in (zmq.EVENT_HANDSHAKE_SUCCEEDED, None)
    client.close()
    monitor.close()


def test_unknown_client_is_rejected(curve_server) -> None:
    context, server, endpoint, keys = curve_server
    client, monitor = make_client(context, endpoint, keys / "outsider" / "intruder.key_secret", keys / "server.key")
    client.send(b"ping")
    assert wait_for_event(monitor, {zmq.EVENT_HANDSHAKE_FAILED_AUTH}) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    assert not server.poll(300), "server received a request from a client not on the allow-list"
    client.close()
    monitor.close()


def test_plaintext_client_gets_nothing_through(curve_server) -> None:
    context, server, endpoint, _keys = curve_server
    client, monitor = make_client(context, endpoint, None, None)
    client.send(b"ping")
    assert not server.poll(500)
    client.close()
    monitor.close()


def test_allow_list_refuses_secret_keys_and_empty_dirs(tmp_path: Path) -> None:
    create_curve_keypair(tmp_path, "leaky")
    with zmq.Context() as context:
        with pytest.raises(SecurityError, match="public keys only"):
            start_allow_list_authenticator(context, tmp_path)
        (tmp_path / "empty").mkdir()
        with pytest.raises(SecurityError, match="holds no client public keys"):
            start_allow_list_authenticator(context, tmp_path / "empty")


def test_bad_key_files_are_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("curve\n    public-key = \"tooshort\"\n")
    with pytest.raises(SecurityError, match="bad.key"):
        load_curve_keypair(bad)
    with pytest.raises(SecurityError, match="not found"):
        load_curve_keypair(tmp_path / "missing.key")
    public, _secret = create_curve_keypair(tmp_path, "pubonly")
    with pytest.raises(SecurityError, match="holds no secret key"):
        load_curve_keypair(public, need_secret=True)
    with pytest.raises(SecurityError, match="already exists"):
        create_curve_keypair(tmp_path, "pubonly")


def test_signed_manifest_verifies_and_tampering_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "bundle" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text('{"files": {"policy.onnx": "ab12"}}\n')
    secret, public = write_signing_key(tmp_path / "keys")
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    sign_manifest(manifest, secret)
    verify_manifest(manifest, public)
    manifest.write_text('{"files": {"policy.onnx": "ff00"}}\n')
    with pytest.raises(BundleSignatureError, match="does not verify"):
        verify_manifest(manifest, public)


def test_signature_by_another_key_or_missing_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text("{}\n")
    secret, _ = write_signing_key(tmp_path, "ours")
    _, other_public = write_signing_key(tmp_path, "theirs")
    with pytest.raises(BundleSignatureError, match="not signed"):
        verify_manifest(manifest, other_public)
    sign_manifest(manifest, secret)
    with pytest.raises(BundleSignatureError, match="signed by another key"):
        verify_manifest(manifest, other_public)
    (tmp_path / "manifest.json.sig").write_text("zz\n")
    with pytest.raises(BundleSignatureError, match="expected 128 hex characters"):
        verify_manifest(manifest, other_public)


@given(st.text(max_size=80))
def test_hex_parser_never_crashes(text: str) -> None:
    try:
        assert len(parse_hex(text, 32, "key")) == 32
    except SecurityError as exc:
        assert str(exc).startswith("key: ")


def test_keys_command_writes_key_pairs_and_refuses_overwrite(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "spaars_robot.cli", "keys", "--out", str(tmp_path), "--client", "arm"]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for name in ("server.key", "server.key_secret", "arm.key", "arm.key_secret", "allowed_clients/arm.key",
                 "signing.key", "signing.pub"):
        assert (tmp_path / name).is_file(), name
    assert load_curve_keypair(tmp_path / "allowed_clients" / "arm.key").secret is None
    again = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "already exists; pass --force" in again.stderr
