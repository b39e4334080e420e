"""The file-locked cache every offline stage after pretraining shares (SPAR's stages, SUPE's skills).

One entry per key: `<key>.pt` when done, `<key>.partial.pt` while it runs (the stage's own exact-resume
checkpoint), `<key>.lock` held while either is written, so two seed processes that need the same entry compute it
once. An unreadable entry is derived data: it is set aside as `.corrupt` (never deleted) and computed again.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from spaars_robot.data.files import atomic_torch_save, safe_torch_load
from spaars_robot.train.pretrain import _set_aside

T = TypeVar("T")


def cached_stage(cache_dir: Path, key: str, what: str, load: Callable[[dict], T],
                 compute: Callable[[Path], tuple[T, dict]], store: Callable[[T], dict],
                 log: Callable[[str], None] | None = None) -> tuple[T, dict]:
    """(result, info): read `key`'s entry with `load`, or `compute(partial_checkpoint_path)` and `store` it.

    `info` is the stage's JSON-able record plus where the entry is and whether it was a cache hit.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    path, partial = cache_dir / f"{key}.pt", cache_dir / f"{key}.partial.pt"
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            try:
                state = safe_torch_load(path)
                return load(state), {**json.loads(state["info"]), "cache": str(path), "cache_hit": True}
            except Exception as exc:  # any failure to read it means it cannot be trusted
                _set_aside(path, exc, log, f"running {what} again")
        result, info = compute(partial)
        atomic_torch_save(path, {**store(result), "info": json.dumps(info)})
        partial.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (cache_dir / f"{key}.lock").unlink()
    return result, {**info, "cache": str(path), "cache_hit": False}
