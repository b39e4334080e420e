"""A bundle is served only if every file matches its manifest hash and the graph agrees with the manifest."""
from __future__ import annotations

import json
import shutil

import pytest

from spaars_robot.export.bundle import BundleError, BundleIntegrityError, load_bundle


@pytest.fixture
def copy(bundle, tmp_path):
    target = tmp_path / "bundle"
    shutil.copytree(bundle.path, target)
    return target


def test_intact_copy_loads_with_same_identity(bundle, copy):
    assert load_bundle(copy).sha256 == bundle.sha256


def test_modified_graph_is_refused_naming_the_file(copy):
    data = bytearray((copy / "policy.onnx").read_bytes())
    data[-1] ^= 0xFF
    (copy / "policy.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=r"policy\.onnx has SHA-256 .* modified"):
        load_bundle(copy)


def test_edited_manifest_disagrees_with_graph_metadata(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["gate"]["threshold"] = -5.0
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleIntegrityError, match="spaars.gate_threshold"):
        load_bundle(copy)


def test_unlisted_file_and_missing_dir_are_refused(copy, tmp_path):
    (copy / "extra.onnx").write_bytes(b"x")
    with pytest.raises(BundleIntegrityError, match="unlisted file.*extra.onnx"):
        load_bundle(copy)
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nope")
