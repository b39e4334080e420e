"""Where datasets live and how a short id names one: the one resolver every command and benchmark uses."""
from __future__ import annotations

import os
from pathlib import Path

from spaars_robot.errors import SpaarsError


def datasets_root() -> Path:
    """Where datasets live: $SPAARS_DATASETS, else ./datasets."""
    return Path(os.environ.get("SPAARS_DATASETS", "datasets"))


def resolve_dataset(path: Path | str, root: Path | None = None) -> Path:
    """A path, or a short id (`hopper-medium`, `spaars/hopper-medium-v0`) under the dataset root."""
    p = Path(path)
    if p.exists():
        return p
    root = root if root is not None else datasets_root()
    for candidate in (root / p, root / "spaars" / p, root / "spaars" / f"{p}-v0"):
        if candidate.exists():
            return candidate
    raise SpaarsError(f"dataset {path} not found (looked at {p} and under {root})")
