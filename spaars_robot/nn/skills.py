"""OPAL-style skill VAE (Ajay et al. 2021) as SUPE uses it (methods.md 3.1): H-step chunks -> one skill z.

- encoder q(z | s_0..s_{H-1}, a_0..a_{H-1}): a per-step state MLP, the actions appended, a bidirectional GRU over
  the chunk, every step's output flattened into a linear head (mean, log-variance);
- prior p(z | s_0): a state-conditioned diagonal Gaussian, what the high level samples from before it has learned;
- decoder pi(a_t | s_t, z): the low-level policy, a diagonal Gaussian with log-std in [-20, 2] and a small
  final layer (x 1e-2) so it starts near zero mean and unit spread.
Loss: -mean over the chunk of log pi(a_t | s_t, z), z drawn from q, plus kl_weight * KL(q || p).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from spaars_robot.nn.mlp import mlp

if TYPE_CHECKING:
    from spaars_robot.config.training import SUPEConfig

DECODER_LOG_STD = (-20.0, 2.0)


def _diag_gaussian(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) from a [..., 2k] head read as mean and log-variance (SUPE: std = exp(0.5 * out))."""
    mean, log_var = params.chunk(2, -1)
    return mean, (0.5 * log_var.clamp(-20.0, 10.0)).exp()


def gaussian_kl(mean_q: torch.Tensor, std_q: torch.Tensor, mean_p: torch.Tensor, std_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mean_q, std_q) || N(mean_p, std_p)) summed over the last dimension."""
    return (torch.log(std_p / std_q) + (std_q.pow(2) + (mean_q - mean_p).pow(2)) / (2 * std_p.pow(2)) - 0.5).sum(-1)


class SkillVAE(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, skill_dim: int, horizon: int, hidden: tuple[int, ...],
                 gru_hidden: int, gru_layers: int, kl_weight: float) -> None:
        super().__init__()
        self.obs_dim, self.action_dim, self.skill_dim, self.horizon = obs_dim, action_dim, skill_dim, horizon
        self.kl_weight = kl_weight
        self.state_net = nn.Sequential(mlp(obs_dim, hidden[:-1], hidden[-1]), nn.ReLU())
        self.gru = nn.GRU(hidden[-1] + action_dim, gru_hidden, num_layers=gru_layers, batch_first=True,
                          bidirectional=True)
        self.encoder_head = nn.Linear(horizon * 2 * gru_hidden, 2 * skill_dim)
        self.prior = mlp(obs_dim, hidden, 2 * skill_dim)
        self.decoder = mlp(obs_dim + skill_dim, hidden, 2 * action_dim)
        with torch.no_grad():
            self.decoder[-1].weight.mul_(1e-2)
            self.decoder[-1].bias.mul_(1e-2)

    @classmethod
    def from_config(cls, obs_dim: int, action_dim: int, cfg: SUPEConfig) -> SkillVAE:
        """The skill VAE a run's `supe` section describes (training, the stage cache and export build it alike)."""
        return cls(obs_dim, action_dim, cfg.skill_dim, cfg.horizon, cfg.hidden, cfg.gru_hidden, cfg.gru_layers,
                   cfg.kl_weight)

    def encode(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | chunk): (mean, std) [B, k] from obs [B, H, obs_dim] and actions [B, H, action_dim]."""
        features = torch.cat([self.state_net(obs), action], -1)
        out, _ = self.gru(features)
        return _diag_gaussian(self.encoder_head(out.reshape(out.shape[0], -1)))

    def prior_dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z | s): (mean, std) [B, k]."""
        return _diag_gaussian(self.prior(obs))

    def decode_dist(self, obs: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pi(a | s, z): (mean, std) of the low-level action, unbounded (executed actions are clipped to [-1, 1])."""
        mean, log_std = self.decoder(torch.cat([obs, z], -1)).chunk(2, -1)
        return mean, log_std.clamp(*DECODER_LOG_STD).exp()

    def decode_mean(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The deterministic low-level action (evaluation, export), clipped to the action box."""
        return self.decode_dist(obs, z)[0].clamp(-1.0, 1.0)

    def decode_sample(self, obs: torch.Tensor, z: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A sampled low-level action, clipped to [-1, 1] as SUPE executes it."""
        mean, std = self.decode_dist(obs, z)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return (mean + std * noise).clamp(-1.0, 1.0)

    def loss(self, obs: torch.Tensor, action: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Negative log-likelihood of the chunk's actions under the decoder + kl_weight * KL(q || p(. | s_0))."""
        mean_q, std_q = self.encode(obs, action)
        z = mean_q + std_q * torch.randn(mean_q.shape, generator=generator, dtype=mean_q.dtype,
                                         device=mean_q.device)
        z_steps = z.unsqueeze(1).expand(-1, obs.shape[1], -1)
        mean_a, std_a = self.decode_dist(obs, z_steps)
        log_prob = (-0.5 * ((action - mean_a) / std_a).pow(2) - std_a.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        nll = -log_prob.mean()
        mean_p, std_p = self.prior_dist(obs[:, 0])
        kl = gaussian_kl(mean_q, std_q, mean_p, std_p).mean()
        return nll + self.kl_weight * kl, {"skills/nll": nll.detach(), "skills/kl": kl.detach(),
                                           "skills/recon_mse": (mean_a - action).pow(2).mean().detach()}
