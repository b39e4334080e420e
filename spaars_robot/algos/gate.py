"""The SPAARS advantage gate (methods.md 6.6).

At state s the raw action is executed only when the shared critic ensemble says, with confidence,
that it beats the decoded latent action: LCB = mean_i A_i - kappa * std_i A_i > tau with
A_i = Q_i(s, a_raw) - Q_i(s, a_lat). Hysteresis keeps it raw while LCB > tau - h, so control does not
chatter between the two policies. tau and h are relative to a scale (scale-free across tasks): the
running mean |Q| (`scale: q`, the default) or the mean |A| over recently visited states (`scale:
advantage`). Why both: on hopper the advantages are ~3e-4 of |Q|, so a hysteresis of 0.01 |Q| is ~30 mean
|A| wide and latches the gate open at the first positive LCB of an episode (benchmarks/gate_diagnostics.py).
"""
from __future__ import annotations

from typing import TypeVar

import torch

from spaars_robot.algos.latch import Latch
from spaars_robot.nn.critics import QEnsemble

Scale = TypeVar("Scale", torch.Tensor, float)


def choose_scale(kind: str, q_scale: Scale, adv_scale: Scale | None) -> Scale:
    """The quantity the gate's relative thresholds multiply, for GateConfig.scale = `kind`.

    One place for the choice, because training (live tensors) and export (a checkpoint's values)
    must agree on it or the deployed gate fires at different states than the trained one.
    """
    if kind == "advantage":
        if adv_scale is None:
            raise ValueError("gate.scale is 'advantage' but no advantage scale was recorded "
                             "(a checkpoint written before gate.scale existed)")
        return adv_scale
    if kind != "q":
        raise ValueError(f"unknown gate scale {kind!r} (q | advantage)")
    return q_scale


def member_advantages(critic: QEnsemble, obs: torch.Tensor, raw_action: torch.Tensor,
                      latent_action: torch.Tensor) -> torch.Tensor:
    """A_i = Q_i(s, a_raw) - Q_i(s, a_lat) for every ensemble member ([E, B])."""
    return critic(obs, raw_action) - critic(obs, latent_action)


def lcb_of(advantage: torch.Tensor, kappa: float) -> torch.Tensor:
    """mean_i A_i - kappa * std_i A_i per state ([B]) from member advantages ([E, B])."""
    return advantage.mean(0) - kappa * advantage.std(0, unbiased=False)


def gate_lcb(critic: QEnsemble, obs: torch.Tensor, raw_action: torch.Tensor, latent_action: torch.Tensor,
             kappa: float) -> torch.Tensor:
    """Lower confidence bound of the exploitation advantage over the ensemble, per state ([B])."""
    return lcb_of(member_advantages(critic, obs, raw_action, latent_action), kappa)


class AdvantageGate:
    """Per-trajectory gate decision: the shared Latch, its thresholds rescaled at every call.

    tau and h are stored relative to a scale that moves during training (running mean |Q|, or mean |A|),
    so the latch's absolute thresholds are set from the current scale before each update. `reset()` at
    every episode start. kappa is not here: it shapes the LCB (`lcb_of`), which the caller computes.
    """

    def __init__(self, tau_rel: float, hysteresis_rel: float) -> None:
        self.tau_rel, self.hysteresis_rel = tau_rel, hysteresis_rel
        self.latch = Latch(0.0, 0.0)

    @property
    def is_open(self) -> bool:
        return self.latch.on

    @is_open.setter
    def is_open(self, value: bool) -> None:
        self.latch.on = bool(value)

    def reset(self) -> None:
        self.latch.reset()

    def decide(self, lcb: float, scale: float) -> bool:
        self.latch.threshold = self.tau_rel * scale
        self.latch.hysteresis = self.hysteresis_rel * scale
        return self.latch.update(lcb)

    def batch_open(self, lcb: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Stateless version for critic targets on a batch (no hysteresis: no trajectory context)."""
        return lcb > self.tau_rel * scale
