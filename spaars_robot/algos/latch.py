"""The one hysteresis rule shared by training (the advantage gate) and serving (gate and support monitor).

Kept free of torch so the onboard runtime can import it without pulling torch in: the deployed gate must
decide exactly as the trained one did, so both use this class rather than two copies of the rule.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Latch:
    """On when value > threshold; once on, stays on while value > threshold - hysteresis."""

    threshold: float
    hysteresis: float
    on: bool = False

    def update(self, value: float) -> bool:
        self.on = value > (self.threshold - self.hysteresis if self.on else self.threshold)
        return self.on

    def reset(self) -> None:
        self.on = False
