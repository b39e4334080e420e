"""Random Network Distillation (Burda et al. 2019): novelty = error of a trained predictor against a
fixed random target. SPAARS uses its plateau as the signal that latent exploration is exhausted."""
from __future__ import annotations

import torch
from torch import nn

from spaars_robot.nn.mlp import mlp


class RND(nn.Module):
    def __init__(self, obs_dim: int, hidden: tuple[int, ...], feature_dim: int) -> None:
        super().__init__()
        self.target = mlp(obs_dim, hidden, feature_dim)
        self.predictor = mlp(obs_dim, hidden, feature_dim)
        for p in self.target.parameters():
            p.requires_grad_(False)

    def novelty(self, obs: torch.Tensor) -> torch.Tensor:
        return (self.predictor(obs) - self.target(obs)).pow(2).mean(-1)
