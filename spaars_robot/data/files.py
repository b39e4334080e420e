"""Crash-safe file writing and content hashes, used by datasets, checkpoints and bundles alike."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write to `path.tmp`, fsync, then rename: a reader never sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path | str, payload: Any) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(path: Path | str, payload: Any) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def safe_torch_load(path: Path | str) -> Any:
    """Our own checkpoints hold only tensors and plain containers: never unpickle arbitrary objects."""
    return torch.load(path, map_location="cpu", weights_only=True)
