"""`rollout_gate.pt`: a run's fitted rollout gate (algos/rollout_gate.py), as `gate fit` writes it and export reads it.

The gate was fitted to the run's final policies (its truth is returns of those policies), so the file records the
sha256 of the checkpoint it was fitted on and is refused for any other: a run resumed or retrained since would
otherwise be exported with a gate that ranks controllers it never saw.
"""
from __future__ import annotations

import math
from pathlib import Path

from spaars_robot.data.files import atomic_torch_save, safe_torch_load, sha256_file
from spaars_robot.errors import SpaarsError
from spaars_robot.nn.neighbour_gate import NeighbourGate

GATE_FILE = "rollout_gate.pt"
FORMAT = 1


def save_rollout_gate(run_dir: Path, gate: NeighbourGate, record: dict) -> Path:
    path = Path(run_dir) / GATE_FILE
    atomic_torch_save(path, {"format": FORMAT, "gate": gate.payload(), "record": record,
                             "checkpoint_sha256": sha256_file(Path(run_dir) / "checkpoint.pt")})
    return path


def load_rollout_gate(run_dir: Path) -> tuple[NeighbourGate, dict]:
    """(gate, its fit record), or a SpaarsError that says what to do; the file is never modified."""
    path = Path(run_dir) / GATE_FILE
    if not path.exists():
        raise SpaarsError(f"{run_dir}: no {GATE_FILE}; fit one first: spaars-robot gate fit {run_dir}")
    try:
        payload = safe_torch_load(path)
        if payload.get("format") != FORMAT:
            raise ValueError(f"format {payload.get('format')!r}, expected {FORMAT}")
        gate = NeighbourGate.from_payload(payload["gate"])
    except Exception as exc:  # unpickling, a missing key, a malformed tensor: one clear line, nothing changed
        raise SpaarsError(f"{path}: unreadable rollout gate ({type(exc).__name__}: {exc}); fit it again with "
                          f"spaars-robot gate fit {run_dir}") from exc
    if not all(math.isfinite(float(v)) for v in (gate.fitted.abs().max(), gate.values.abs().max())):
        raise SpaarsError(f"{path}: non-finite values in the rollout gate; fit it again")
    if payload.get("checkpoint_sha256") != sha256_file(Path(run_dir) / "checkpoint.pt"):
        raise SpaarsError(f"{path} was fitted on another checkpoint.pt than the run holds now (resumed or retrained "
                          f"since?); fit it again: spaars-robot gate fit {run_dir}")
    return gate, dict(payload.get("record", {}))
