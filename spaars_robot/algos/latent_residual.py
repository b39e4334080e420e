"""SPAARS's raw policy as a bounded residual on the latent controller (methods.md section 6, ablation 5).

    mu_raw(s) = clip(a_lat(s) + eps * tanh(Delta(s, a_lat(s))), -1, 1),    a_lat(s) = D(s, mean z(s))

Why this form exists (`online.raw_form: latent_residual`; the default `free` raw policy is the pretraining's AWR
policy): on the hopper runs of issue 16 the free raw policy learned from its own experience only, as fast as raw
fine-tuning's first half, so a switch at 50k handed control to a controller with half raw fine-tuning's experience,
and the critic could not rank it against the latent action (BENCHMARKS "Issue 16, 2026-12-06 (second sitting)").
A residual on the latent action inherits everything the latent phase learned (and everything the latent policy
keeps learning after the switch), starts the gated phase as the latent controller itself when the residual is
zero (the executed controller does not change at the switch; BC error 0 by construction, which is what concurrent
BC only approximates), and cannot leave the latent action by more than eps per dimension: the gate then compares
two nearby actions, a local difference of the critic, and the support given back after the switch is bounded by the
trust region (with the default TD3+BC objective the BC term, not eps, is what binds: docs/spaars.md, "The residual's
objective"). It is SPAR's parameterisation
(algos/spar.py) with the latent controller as the anchor instead of a frozen BC policy; the latent controller is
not frozen, so the residual corrects a moving anchor, as the paper's raw policy follows a moving latent policy.

The residual's parameters are the only ones this module trains: the latent policy and decoder are the agent's own
(trained by SAC through the frozen decoder), shared by reference, and the anchor action is detached so no raw-actor
gradient reaches them.
"""
from __future__ import annotations

import torch
from torch import nn

from spaars_robot.nn.cvae import CVAE
from spaars_robot.nn.mlp import mlp
from spaars_robot.nn.policies import TanhGaussianPolicy


class LatentResidualPolicy(nn.Module):
    """The raw controller D(s, mean z(s)) + bounded residual, in normalised-obs space; deterministic like the
    TD3+BC actor it replaces (`mean_action` is what is executed, evaluated, exported and served)."""

    def __init__(self, latent_policy: TanhGaussianPolicy, cvae: CVAE, obs_dim: int, action_dim: int,
                 hidden: tuple[int, ...], bound: float) -> None:
        super().__init__()
        self.latent_policy, self.cvae = latent_policy, cvae
        self.residual_net = mlp(obs_dim + action_dim, hidden, action_dim)
        self.bound = bound
        last = self.residual_net[-1]  # Delta = 0 at initialisation: the raw controller starts as the latent one
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def anchor_action(self, s: torch.Tensor) -> torch.Tensor:
        """a_lat(s), detached: the raw actor's loss must not move the latent policy or the decoder."""
        return self.cvae.decode(s, self.latent_policy.mean_action(s)).detach()

    def residual(self, s: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """|Delta| <= bound in every dimension, always."""
        return self.bound * torch.tanh(self.residual_net(torch.cat([s, anchor], -1)))

    def mean_action(self, s: torch.Tensor) -> torch.Tensor:
        return self.action_from(s, self.anchor_action(s))

    def action_from(self, s: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """mu_raw(s) for an anchor already decoded (the update step has it for the BC term: one decoder pass)."""
        return (anchor + self.residual(s, anchor)).clamp(-1.0, 1.0)

    def residual_parameters(self) -> list[nn.Parameter]:
        return list(self.residual_net.parameters())

    def residual_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint keeps: the residual alone (the latent policy and decoder are saved with the nets)."""
        return self.residual_net.state_dict()

    def load_residual_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.residual_net.load_state_dict(state)

