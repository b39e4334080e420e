"""Conditional VAE over unordered (s, a) pairs (BCQ/PLAS) and its support score.

The decoder is the latent action space: a = D(s, z) with z in [-z_max, z_max]^k. The support score
of an action is its negative ELBO under the CVAE (reconstruction error through the encoder mean plus
the KL term): high scores mean the action is unlike the data at that state.
"""
from __future__ import annotations

import torch
from torch import nn

from spaars_robot.nn.mlp import mlp


class CVAE(nn.Module):
    def __init__(
        self, obs_dim: int, action_dim: int, latent_dim: int, hidden: tuple[int, ...], kl_weight: float = 0.5
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.kl_weight = kl_weight
        self.encoder = mlp(obs_dim + action_dim, hidden, 2 * latent_dim)
        self.decoder = mlp(obs_dim + latent_dim, hidden, action_dim)

    def encode(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = self.encoder(torch.cat([obs, action], -1)).chunk(2, -1)
        return mu, log_std.clamp(-4.0, 15.0)  # PLAS clamp

    def decode(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.decoder(torch.cat([obs, z], -1)))

    def loss(
        self, obs: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """PLAS objective: MSE reconstruction + kl_weight * KL(q(z|s,a) || N(0, I))."""
        mu, log_std = self.encode(obs, action)
        std = log_std.exp()
        z = mu + std * torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        recon = self.decode(obs, z)
        recon_loss = (recon - action).pow(2).mean()
        kl = (-0.5 * (1 + 2 * log_std - mu.pow(2) - std.pow(2))).sum(-1).mean()
        total = recon_loss + self.kl_weight * kl / self.latent_dim
        return total, {"cvae/recon": recon_loss.detach(), "cvae/kl": kl.detach()}

    def support_score(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Deterministic negative-ELBO proxy: ||D(s, mu_E(s,a)) - a||^2 + kl_weight * KL / k, per sample."""
        mu, log_std = self.encode(obs, action)
        recon = self.decode(obs, mu)
        kl = (-0.5 * (1 + 2 * log_std - mu.pow(2) - (2 * log_std).exp())).sum(-1)
        return (recon - action).pow(2).mean(-1) + self.kl_weight * kl / self.latent_dim
