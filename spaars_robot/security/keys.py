"""CurveZMQ key pairs and the allow-list authenticator for a networked controller.

The server binds loopback by default and needs none of this. When a controller talks to the server
over a network, CurveZMQ (RFC 26) encrypts the link and authenticates both ends: the server has a
key pair, each client has one, and the server accepts only clients whose public key is in its
allow-list directory (ZAP handler = `zmq.auth.ThreadAuthenticator`). Key files are ZeroMQ's own
certificate format (`zmq.auth.create_certificates`), so `zmq.auth` tools and other ZeroMQ stacks
read them too.

Layout written by `spaars-robot keys` (`write_curve_keys`):

    keys/server.key             server public key  (give to clients)
    keys/server.key_secret      server secret key  (stays on the server, mode 0600)
    keys/<client>.key           client public key
    keys/<client>.key_secret    client secret key  (goes to that controller, mode 0600)
    keys/allowed_clients/       public keys only: the server's allow-list directory
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from spaars_robot.errors import SecurityError

ALLOW_LIST_DIR = "allowed_clients"
Z85_KEY_LENGTH = 40  # a 32-byte Curve25519 key in Z85 text


@dataclass(frozen=True, slots=True)
class CurveKeyPair:
    """Z85-encoded keys as zmq socket options expect them; `secret` is None for a public-only file."""

    public: bytes
    secret: bytes | None


def _check_name(name: str) -> None:
    if not name or not all(ch.isalnum() or ch in "-_" for ch in name):
        raise SecurityError(f"key name {name!r} must be letters, digits, '-' or '_'")


def create_curve_keypair(directory: Path | str, name: str, force: bool = False) -> tuple[Path, Path]:
    """Write `<name>.key` and `<name>.key_secret` (0600) in ZeroMQ certificate format."""
    if not zmq.has("curve"):
        raise SecurityError("this libzmq has no CURVE support; install a pyzmq built with libsodium")
    _check_name(name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if not force and (public.exists() or secret.exists()):
        raise SecurityError(f"{public} already exists; pass --force to replace the key pair")
    public_file, secret_file = zmq.auth.create_certificates(directory, name)
    os.chmod(secret_file, 0o600)
    return Path(public_file), Path(secret_file)


def load_curve_keypair(path: Path | str, need_secret: bool = False) -> CurveKeyPair:
    """Read a ZeroMQ certificate file; a missing or malformed file is one clear SecurityError."""
    path = Path(path)
    if not path.is_file():
        raise SecurityError(f"{path}: key file not found")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except Exception as exc:  # zmq.auth raises ValueError/KeyError/OSError depending on the defect
        raise SecurityError(f"{path}: not a ZeroMQ certificate file ({exc})") from exc
    if public is None or len(public) != Z85_KEY_LENGTH or (secret is not None and len(secret) != Z85_KEY_LENGTH):
        raise SecurityError(f"{path}: key is not a {Z85_KEY_LENGTH}-character Z85 Curve25519 key")
    if need_secret and secret is None:
        raise SecurityError(f"{path}: holds no secret key (use the .key_secret file)")
    return CurveKeyPair(public=public, secret=secret)


def write_curve_keys(directory: Path | str, clients: list[str], force: bool = False) -> list[Path]:
    """Server key pair, one key pair per client, and the server's allow-list of client public keys."""
    directory = Path(directory)
    written = list(create_curve_keypair(directory, "server", force))
    allow = directory / ALLOW_LIST_DIR
    allow.mkdir(parents=True, exist_ok=True)
    for client in clients:
        if client == "server":
            raise SecurityError("'server' is reserved for the server key pair; pick another client name")
        public, secret = create_curve_keypair(directory, client, force)
        shutil.copyfile(public, allow / public.name)
        written += [public, secret, allow / public.name]
    return written


def configure_curve_server(socket: zmq.Socket, server_secret_file: Path | str) -> None:
    """Make `socket` a CURVE server (call before bind); clients must know the server public key."""
    keys = load_curve_keypair(server_secret_file, need_secret=True)
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True


def configure_curve_client(socket: zmq.Socket, client_secret_file: Path | str,
                           server_public_file: Path | str) -> None:
    """Make `socket` a CURVE client of the server whose public key is in `server_public_file`."""
    keys = load_curve_keypair(client_secret_file, need_secret=True)
    server = load_curve_keypair(server_public_file)
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = server.public


def start_allow_list_authenticator(context: zmq.Context, allow_list_dir: Path | str) -> ThreadAuthenticator:
    """Start a ZAP handler that accepts only CURVE clients whose public key file is in `allow_list_dir`.

    Call before binding the server socket; `stop()` the returned authenticator on shutdown. Keys are
    read once at start; call `configure_curve(location=...)` again to reload after editing the list.
    """
    allow_list_dir = Path(allow_list_dir)
    if not allow_list_dir.is_dir():
        raise SecurityError(f"{allow_list_dir}: allow-list directory not found")
    if not any(allow_list_dir.glob("*.key")):
        raise SecurityError(f"{allow_list_dir}: allow-list holds no client public keys (*.key)")
    for key_file in [*allow_list_dir.glob("*.key"), *allow_list_dir.glob("*.key_secret")]:
        if load_curve_keypair(key_file).secret is not None:
            raise SecurityError(f"{key_file}: allow-list must hold public keys only, this file has a secret key")
    authenticator = ThreadAuthenticator(context)
    authenticator.start()
    authenticator.configure_curve(domain="*", location=str(allow_list_dir))
    return authenticator
