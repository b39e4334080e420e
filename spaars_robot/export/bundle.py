"""Load a policy bundle and prove it is the one that was exported before anything serves it.

Every file is checked against the SHA-256 in `manifest.json`, unlisted files are refused (a stray graph
could be loaded by mistake), and the ONNX metadata must agree with the manifest (holosoma-style
consistency check). The bundle's identity is the SHA-256 of `manifest.json`: it covers every file hash,
so it is what the server announces in the handshake.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from spaars_robot.errors import SpaarsError
from spaars_robot.export.manifest import BUNDLE_FORMAT_VERSION, MANIFEST_NAME, BundleManifest


def sha256_file(path: Path) -> str:
    """Streamed SHA-256 of one file (here rather than data.files, which imports torch: serving never needs it)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class BundleError(SpaarsError):
    """A bundle is missing, malformed, or from an unsupported format version."""


class BundleIntegrityError(BundleError):
    """A bundle file does not match its manifest hash (tampered, truncated or half-copied)."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: BundleManifest
    sha256: str  # SHA-256 of manifest.json, which lists every other file's hash

    @property
    def graph_path(self) -> Path:
        return self.path / self.manifest.graph.file


def load_bundle(path: Path | str) -> Bundle:
    """Parse and verify a bundle directory; raises BundleError / BundleIntegrityError naming the culprit."""
    path = Path(path)
    manifest_path = path / MANIFEST_NAME
    if not path.is_dir():
        raise BundleError(f"bundle {path} not found (expected a directory with {MANIFEST_NAME})")
    if not manifest_path.is_file():
        raise BundleError(f"bundle {path} has no {MANIFEST_NAME}")
    raw = manifest_path.read_bytes()
    try:
        manifest = BundleManifest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BundleError(f"{manifest_path}: invalid manifest at {where or '<root>'}: {first['msg']}") from exc
    if manifest.format_version != BUNDLE_FORMAT_VERSION:
        raise BundleError(f"{manifest_path}: bundle format {manifest.format_version}, "
                          f"this runtime reads format {BUNDLE_FORMAT_VERSION}")
    if manifest.graph.file not in manifest.files:
        raise BundleError(f"{manifest_path}: graph {manifest.graph.file} is not listed under files")
    _verify_files(path, manifest)
    _verify_metadata(path / manifest.graph.file, manifest)
    return Bundle(path=path, manifest=manifest, sha256=hashlib.sha256(raw).hexdigest())


def _verify_files(root: Path, manifest: BundleManifest) -> None:
    for rel, expected in sorted(manifest.files.items()):
        file = root / rel
        if not file.resolve().is_relative_to(root.resolve()):
            raise BundleError(f"bundle {root}: manifest lists {rel}, which is outside the bundle")
        if not file.is_file():
            raise BundleIntegrityError(f"bundle {root}: {rel} is listed in the manifest but missing")
        actual = sha256_file(file)
        if actual != expected:
            raise BundleIntegrityError(f"bundle {root}: {rel} has SHA-256 {actual[:12]}..., manifest says "
                                       f"{expected[:12]}...; the file was modified, refusing to load")
    # The detached signature cannot list itself in the manifest it signs; it is the one allowed sibling.
    listed = set(manifest.files) | {MANIFEST_NAME, MANIFEST_NAME + ".sig"}
    extra = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                   and str(p.relative_to(root)) not in listed)
    if extra:
        raise BundleIntegrityError(f"bundle {root}: unlisted file(s) {', '.join(extra)}; refusing to load")


def _verify_metadata(graph: Path, manifest: BundleManifest) -> None:
    import onnx  # here, not at import: onnx (with ml_dtypes) costs ~1.5-3 s, and every CLI command imports this module

    props = {p.key: p.value for p in onnx.load(str(graph), load_external_data=False).metadata_props}
    for key, expected in manifest.metadata_props().items():
        if props.get(key) != expected:
            raise BundleIntegrityError(f"{graph}: ONNX metadata {key}={props.get(key)!r} disagrees with the "
                                       f"manifest ({expected!r})")


DEFAULT_BUNDLE = "policies/hopper-default"


def resolve_bundle(path: str) -> Path:
    """A bundle path as given, else relative to the data root (where `policies/hopper-default` ships)."""
    from spaars_robot.config.loading import data_root

    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    return data_root() / given
