"""The one hysteresis rule shared by training (the advantage gate) and serving (gate and support monitor).

Kept free of torch so the onboard runtime can import it without pulling torch in: the deployed gate must
decide exactly as the trained one did, so both use this class rather than two copies of the rule.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

# The support monitor's hysteresis as a fraction of |threshold|: what export writes to a bundle's manifest by default
# and what training's monitor (`online.support_monitor`) uses, so the trained and the served monitor veto alike.
SUPPORT_HYSTERESIS_REL = 0.1


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


@dataclass
class Hold:
    """A decision asked every `steps` steps of an episode and kept in between (`gate fit --hold-steps`).

    Shared by the training-side agent that `gate fit` plays and the server's per-session state, for the Latch's
    reason: the served gate must hold exactly as the one that was chosen in simulation."""

    steps: int = 1
    value: bool | None = None  # the decision in force; None: ask at the next step
    left: int = 0  # further steps it holds

    def next(self, ask: Callable[[], bool]) -> bool:
        """The decision for this step: the held one while it lasts, else `ask()`, which is then held."""
        if self.value is not None and self.left > 0:
            self.left -= 1
            return self.value
        self.value, self.left = ask(), self.steps - 1
        return self.value

    def reset(self) -> None:
        self.value, self.left = None, 0


def monitor_support(latch: Latch, score: float) -> bool:
    """The support monitor's decision on one support score, a NaN counting as the worst case (out of support): one rule
    for the server's per-session monitor and training's (`online.support_monitor`)."""
    return latch.update(score if not math.isnan(score) else math.inf)

