"""Which action to send: the advantage gate and the support monitor, each a two-threshold latch.

SPAARS picks the raw action where the critic ensemble's lower confidence bound says it beats the latent
one (gate_advantage > tau). The support monitor then vetoes a raw action whose CVAE support score says it
is off the data (SPOT-style density check), answering with the in-support latent action instead
(PLAS-style fallback). Both latches use hysteresis so a value hovering at a threshold cannot make the
robot alternate policies every tick. The state is per client: each controller has its own history.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from spaars_robot.algos.latch import Hold, Latch, monitor_support
from spaars_robot.export.manifest import BundleManifest, Controller
from spaars_robot.export.skill_clock import SkillClock
from spaars_robot.runtime.protocol import Source


@dataclass
class Decision:
    source: Source
    gate_advantage: float
    support_score: float
    gate_raw: bool  # the gate alone would send the raw action
    out_of_support: bool  # the support monitor's latch is on


class DecisionState:
    """Per-client gate + support monitor state; `decide` is called once per observation."""

    def __init__(self, gate_threshold: float, gate_hysteresis: float, support_threshold: float,
                 support_hysteresis: float, controller: Controller = "gated", skill: SkillClock | None = None,
                 gate_hold_steps: int = 1) -> None:
        self.gate = Latch(gate_threshold, gate_hysteresis)
        # a gate fitted with `gate fit --hold-steps N` is asked every N steps and its answer held in between, as the
        # simulator played it when it was chosen; the support monitor below still judges every step
        self.gate_hold = Hold(gate_hold_steps)
        self.support = Latch(support_threshold, support_hysteresis)
        self.controller = controller  # gated: the latch decides; raw / latent: that controller alone (the manifest's)
        self.skill = skill  # a skill policy's skill in force (export/skill_clock.py); same life as the latches
        self.fallbacks = 0

    @property
    def gate_hold_steps(self) -> int:
        return self.gate_hold.steps

    @classmethod
    def for_bundle(cls, manifest: BundleManifest) -> DecisionState:
        """A client's fresh state for this bundle: its thresholds, and a skill clock if it is a skill policy."""
        m = manifest
        return cls(m.gate.threshold, m.gate.hysteresis, m.support.threshold, m.support.hysteresis,
                   controller=m.gate.controller, skill=SkillClock.for_bundle(m.skills),
                   gate_hold_steps=m.gate.hold_steps)

    def reset(self) -> None:
        """A new episode: start from the latent (in-support) policy with the monitor clear (and choose a skill)."""
        self.gate.reset()
        self.support.reset()
        self.gate_hold.reset()
        if self.skill is not None:
            self.skill.reset()

    def decide(self, gate_advantage: float, support_score: float) -> Decision:
        """Gate first (or the bundle's one controller); a raw choice is vetoed while the raw action's support score
        is out of range.

        Non-finite numbers are treated as the worst case: NaN advantage -> latent, NaN score -> out of support.
        """
        if self.controller == "gated":
            gate_raw = self.gate_hold.next(lambda: self.gate.update(
                gate_advantage if math.isfinite(gate_advantage) else -math.inf))
        else:
            gate_raw = self.controller == "raw"
        out_of_support = monitor_support(self.support, support_score)
        if not gate_raw:
            source: Source = "latent"
        elif out_of_support:
            source = "fallback"
            self.fallbacks += 1
        else:
            source = "raw"
        return Decision(source, gate_advantage, support_score, gate_raw, out_of_support)
