"""`data list`: every dataset under a root, read from its metadata only (fast: no checksum of the arrays).

The root holds Minari's layout, `<root>/<namespace>/[<env>/]<name>-vN/data/metadata.json`, so a dataset is
any directory with `data/metadata.json`. Collection work folders (`_behaviour`, names starting with `_`) are
not datasets; an unfinished collection (`<name>.partial`) and a damaged metadata file are listed as such,
because a user looking for a dataset needs to see them too.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from spaars_robot.data.episodes import METADATA_FILE, read_metadata
from spaars_robot.errors import DatasetError

PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class DatasetEntry:
    """One line of `data list`."""

    dataset_id: str
    path: Path
    episodes: int | None
    steps: int | None
    task: str | None
    env_id: str | None
    status: str  # "ok", "incomplete" or "damaged: <why>"


def _env_id(metadata: dict) -> str | None:
    if metadata.get("spaars_env_id"):
        return str(metadata["spaars_env_id"])
    spec = metadata.get("env_spec")
    try:
        return str(json.loads(spec)["id"]) if isinstance(spec, str) else None
    except (json.JSONDecodeError, KeyError, TypeError):
        return None


def _entry(root: Path, directory: Path) -> DatasetEntry:
    relative = directory.relative_to(root).as_posix()
    if directory.name.endswith(PARTIAL_SUFFIX):
        return DatasetEntry(relative.removesuffix(PARTIAL_SUFFIX), directory, None, None, None, None,
                            "incomplete")
    try:
        metadata = read_metadata(directory)
    except DatasetError as exc:
        return DatasetEntry(relative, directory, None, None, None, None, f"damaged: {exc}")
    return DatasetEntry(str(metadata.get("dataset_id", relative)), directory, metadata.get("total_episodes"),
                        metadata.get("total_steps"), metadata.get("spaars_task"), _env_id(metadata), "ok")


def list_datasets(root: Path | str) -> list[DatasetEntry]:
    """Every dataset directory under `root`, sorted by path; a root that does not exist is an error."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset root (make one with `data collect` or `data import`; "
                           "--root or $SPAARS_DATASETS choose another)")
    found: set[Path] = set()
    for meta in root.rglob(METADATA_FILE):
        if meta.parent.name == "data":
            found.add(meta.parent.parent)
    found |= {p for p in root.rglob(f"*{PARTIAL_SUFFIX}") if p.is_dir()}
    visible = [d for d in found if d != root
               and not any(part.startswith("_") for part in d.relative_to(root).parts)
               and not any(part.endswith(PARTIAL_SUFFIX) for part in d.relative_to(root).parts[:-1])]
    return [_entry(root, d) for d in sorted(visible)]
