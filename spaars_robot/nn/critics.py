"""Q-ensembles over raw actions and state-value networks (IQL's V)."""
from __future__ import annotations

import torch
from torch import nn

from spaars_robot.nn.mlp import EnsembleMLP, forward_fp32_head, mlp


class QEnsemble(nn.Module):
    """Q_1..Q_E(s, a) in one batched network; returns [E, B]. Shared by SAC, IQL and the SPAARS gate."""

    def __init__(
        self, obs_dim: int, action_dim: int, hidden: tuple[int, ...], ensemble_size: int, layer_norm: bool
    ) -> None:
        super().__init__()
        self.ensemble_size = ensemble_size
        self.net = EnsembleMLP(ensemble_size, obs_dim + action_dim, hidden, 1, layer_norm)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=-1)).squeeze(-1)

    def target_min(self, obs: torch.Tensor, action: torch.Tensor, subset: int | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """min over members ([B]): all of them (subset None), or a random `subset` drawn per call (RLPD/REDQ).

        With a large ensemble the min over all members is very pessimistic; RLPD and SUPE take the min over
        2 members sampled at every update, and keep the whole ensemble for the gate's uncertainty.
        """
        q = self(obs, action)
        if subset is None or subset >= self.ensemble_size:
            return q.min(0).values
        members = torch.randperm(self.ensemble_size, generator=generator, device=q.device)[:subset]
        return q[members].min(0).values


class ValueNet(nn.Module):
    """V(s), trained by expectile regression in IQL."""

    def __init__(self, obs_dim: int, hidden: tuple[int, ...], layer_norm: bool = False) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, 1, layer_norm)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return forward_fp32_head(self.net, obs).squeeze(-1)
