"""Squashed-Gaussian policies, used for raw actions (bound 1) and for CVAE latents (bound z_max)."""
from __future__ import annotations

import math

import torch
from torch import nn

from spaars_robot.nn.mlp import mlp

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class TanhGaussianPolicy(nn.Module):
    """pi(.|s) = bound * tanh(N(mu(s), sigma(s))) (SAC, Haarnoja et al. 2018, App. C).

    `mean_action` is the deterministic action used for evaluation, export and BC targets.
    """

    def __init__(self, obs_dim: int, out_dim: int, hidden: tuple[int, ...], bound: float = 1.0) -> None:
        super().__init__()
        self.trunk = mlp(obs_dim, hidden[:-1], hidden[-1]) if len(hidden) > 1 else nn.Linear(obs_dim, hidden[0])
        self.head = nn.Linear(hidden[-1], 2 * out_dim)
        self.out_dim = out_dim
        self.bound = bound

    def _dist_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = self.head(torch.relu(self.trunk(obs))).chunk(2, dim=-1)
        return mu, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def pre_tanh_mean(self, obs: torch.Tensor) -> torch.Tensor:
        """mu before the squashing (export computes SUPE's skill from it: atanh(tanh(mu)) is ill-conditioned)."""
        return self._dist_params(obs)[0]

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        mu, _ = self._dist_params(obs)
        return self.bound * torch.tanh(mu)

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None):
        """Reparameterised sample and its log-probability (with the tanh change-of-variables term)."""
        mu, log_std = self._dist_params(obs)
        std = log_std.exp()
        noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        pre_tanh = mu + std * noise
        squashed = torch.tanh(pre_tanh)
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log(1 - tanh(x)^2) computed stably as 2*(log 2 - x - softplus(-2x))
        log_prob = log_prob - (2 * (math.log(2) - pre_tanh - nn.functional.softplus(-2 * pre_tanh))).sum(-1)
        log_prob = log_prob - self.out_dim * math.log(self.bound)
        return self.bound * squashed, log_prob, self.bound * torch.tanh(mu)

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Log-density of a given (bounded) action; used by AWR extraction (IQL)."""
        mu, log_std = self._dist_params(obs)
        squashed = (action / self.bound).clamp(-0.999999, 0.999999)
        pre_tanh = torch.atanh(squashed)
        std = log_std.exp()
        log_prob = (-0.5 * ((pre_tanh - mu) / std).pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - torch.log1p(-squashed.pow(2) + 1e-6).sum(-1)
        return log_prob - self.out_dim * math.log(self.bound)
