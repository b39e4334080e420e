"""The skill a skill policy (SUPE, SPAARS-SUPE) holds for H steps: per-client state of a served skill bundle.

SUPE's high level chooses a skill every H environment steps and the decoder acts under it in between, so a
served skill policy is not a function of the observation alone. The graph is stateless (it takes the skill in
force and whether to choose now, and returns the skill it used); this clock is the state, kept per session like
the gate's latches, and restarted by the protocol's `reset` so every episode starts by choosing, as in training
(`algos/supe.SkillHolder`).
"""
from __future__ import annotations

import numpy as np

from spaars_robot.export.manifest import SkillSpec


class SkillClock:
    def __init__(self, dim: int, horizon: int) -> None:
        self.horizon = horizon
        self.skill = np.zeros(dim, dtype=np.float32)
        self.steps = 0
        self.choices = 0

    @classmethod
    def for_bundle(cls, skills: SkillSpec | None) -> SkillClock | None:
        """A fresh clock for a bundle's `skills` manifest entry (None: not a skill policy, nothing to hold)."""
        return None if skills is None else cls(skills.dim, skills.horizon)

    def reset(self) -> None:
        """A new episode: the next observation chooses a skill."""
        self.skill[:] = 0.0
        self.steps = 0

    @property
    def due(self) -> bool:
        """Whether this step chooses a new skill (the first of an episode, then every `horizon` steps)."""
        return self.steps % self.horizon == 0

    def advance(self, skill_used: np.ndarray) -> None:
        """Record the skill the graph acted under at this step."""
        if self.due:
            self.choices += 1
        self.skill[:] = skill_used
        self.steps += 1
