"""Ed25519 signatures over a bundle's `manifest.json`.

The manifest already lists the SHA-256 of every file in the bundle, and the loader refuses a
bundle whose files do not match it; signing the manifest's exact bytes therefore covers the whole
bundle. The signature sits next to it as `manifest.json.sig` (hex text). Verification uses a
trusted public key the robot already holds, never a key shipped inside the bundle.

Key files are hex text, one line: `signing.key` (32-byte seed, mode 0600) and `signing.pub`.
"""
from __future__ import annotations

import os
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from spaars_robot.errors import BundleSignatureError, SecurityError

SIGNATURE_SUFFIX = ".sig"
KEY_BYTES = 32
SIGNATURE_BYTES = 64


def parse_hex(text: str, n_bytes: int, what: str) -> bytes:
    """Parse a one-line hex string of exactly `n_bytes`; raises SecurityError naming `what`."""
    stripped = text.strip()
    if len(stripped) != 2 * n_bytes:
        raise SecurityError(f"{what}: expected {2 * n_bytes} hex characters, got {len(stripped)}")
    try:
        return bytes.fromhex(stripped)
    except ValueError as exc:
        raise SecurityError(f"{what}: not hex ({exc})") from exc


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise SecurityError(f"{path}: {what} not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SecurityError(f"{path}: cannot read {what} ({exc})") from exc


def write_signing_key(directory: Path | str, name: str = "signing", force: bool = False) -> tuple[Path, Path]:
    """Create `<name>.key` (secret seed, 0600) and `<name>.pub`; refuse to overwrite without force."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    secret_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    if not force and (secret_path.exists() or public_path.exists()):
        raise SecurityError(f"{secret_path} already exists; pass --force to replace the signing key")
    key = SigningKey.generate()
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(bytes(key).hex() + "\n")
    public_path.write_text(bytes(key.verify_key).hex() + "\n")
    return secret_path, public_path


def load_signing_key(path: Path | str) -> SigningKey:
    path = Path(path)
    return SigningKey(parse_hex(_read_text(path, "signing key"), KEY_BYTES, str(path)))


def load_verify_key(path: Path | str) -> VerifyKey:
    path = Path(path)
    return VerifyKey(parse_hex(_read_text(path, "trusted public key"), KEY_BYTES, str(path)))


def sign_manifest(manifest_path: Path | str, signing_key_path: Path | str) -> Path:
    """Sign the manifest's bytes; writes `<manifest>.sig` and returns its path."""
    manifest_path = Path(manifest_path)
    key = load_signing_key(signing_key_path)
    signature = key.sign(manifest_path.read_bytes()).signature
    sig_path = manifest_path.with_name(manifest_path.name + SIGNATURE_SUFFIX)
    sig_path.write_text(signature.hex() + "\n")
    return sig_path


def verify_manifest(manifest_path: Path | str, trusted_key_path: Path | str) -> None:
    """Raise BundleSignatureError unless `<manifest>.sig` is a valid signature by the trusted key."""
    manifest_path = Path(manifest_path)
    sig_path = manifest_path.with_name(manifest_path.name + SIGNATURE_SUFFIX)
    if not sig_path.exists():
        raise BundleSignatureError(f"{sig_path}: bundle is not signed, but a trusted key was given")
    verify_key = load_verify_key(trusted_key_path)
    try:
        signature = parse_hex(_read_text(sig_path, "signature"), SIGNATURE_BYTES, str(sig_path))
    except SecurityError as exc:
        raise BundleSignatureError(str(exc)) from exc
    try:
        verify_key.verify(manifest_path.read_bytes(), signature)
    except BadSignatureError as exc:
        raise BundleSignatureError(
            f"{manifest_path}: signature does not verify against {trusted_key_path}; "
            "the manifest was modified or signed by another key"
        ) from exc
