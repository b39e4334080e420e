"""Half-open [start, stop) index ranges, as a task file and a run's config name the observation dims networks read."""
from __future__ import annotations

from collections.abc import Sequence


def ranges_problem(ranges: Sequence[Sequence[int]], dim: int | None = None) -> str | None:
    """What is wrong with `ranges` (empty, unordered, overlapping, or past `dim` when given), or None."""
    shown = [list(r) for r in ranges]
    if not ranges or any(not 0 <= start < stop for start, stop in ranges) or any(
            a[1] > b[0] for a, b in zip(ranges, ranges[1:])):
        return f"{shown}: expected non-empty, increasing, non-overlapping [start, stop) ranges with 0 <= start < stop"
    if dim is not None and ranges[-1][1] > dim:
        return f"{shown} reach past the {dim}-dim observation"
    return None
