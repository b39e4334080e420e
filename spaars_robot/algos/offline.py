"""The networks every data-driven algorithm starts from, and the per-step offline losses (methods.md 6.2).

Kept beside the algorithms (not in the training loop) because they are the maths: the CVAE on
unordered (s, a) pairs (PLAS objective), the shared critic ensemble, V and the AWR raw policy with IQL,
and the PLAS latent actor through the frozen decoder. `train/pretrain.py` owns the loop, the cache and
the checkpoints around them.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from spaars_robot.algos.iql import iql_losses
from spaars_robot.config.training import PretrainConfig
from spaars_robot.nn.critics import QEnsemble, ValueNet
from spaars_robot.nn.cvae import CVAE
from spaars_robot.nn.normalizer import ObsNormalizer
from spaars_robot.nn.policies import TanhGaussianPolicy


class OfflineNets(nn.Module):
    """Every network an algorithm may start from, plus the calibrated scalars that travel with them."""

    def __init__(self, obs_dim: int, action_dim: int, cfg: PretrainConfig) -> None:
        super().__init__()
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.latent_dim = cfg.cvae_latent_dim or 2 * action_dim
        self.normalizer = ObsNormalizer.identity(obs_dim)
        self.cvae = CVAE(obs_dim, action_dim, self.latent_dim, cfg.cvae_hidden, cfg.cvae_kl_weight)
        self.critic = QEnsemble(obs_dim, action_dim, cfg.hidden, cfg.ensemble_size, cfg.layer_norm)
        self.value = ValueNet(obs_dim, cfg.hidden)
        self.raw_policy = TanhGaussianPolicy(obs_dim, action_dim, cfg.hidden)
        self.latent_policy = TanhGaussianPolicy(obs_dim, self.latent_dim, cfg.hidden, bound=cfg.z_max)
        self.register_buffer("support_threshold", torch.tensor(float("inf")))
        self.register_buffer("reward_scale", torch.tensor(1.0))
        self.register_buffer("q_scale", torch.tensor(1.0))

    @property
    def device(self) -> torch.device:
        """Where these networks live (`train --device`): an agent built on them creates its own tensors there."""
        return self.q_scale.device

    def decoded_latent_mean(self, s: torch.Tensor) -> torch.Tensor:
        """a_lat(s) = D(s, mean z(s)): the latent policy's deterministic action (s already normalised)."""
        return self.cvae.decode(s, self.latent_policy.mean_action(s))


def offline_losses(nets: OfflineNets, critic_target: QEnsemble, batch: dict[str, torch.Tensor],
                   cfg: PretrainConfig, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CVAE + IQL (value, critic, AWR actor) losses of one dataset batch, summed: one backward for all.

    Under a bf16 autocast (`--precision bf16`) only the CVAE runs in bf16: critics, values, their targets and the
    advantages stay fp32, because the advantage the gate reads is ~3e-4 of |Q| on hopper, below bf16's
    resolution (8 bits of mantissa: 2^-8 relative).
    """
    cvae_loss, cvae_metrics = nets.cvae.loss(batch["obs"], batch["action"], generator)
    with torch.autocast(batch["obs"].device.type, enabled=False):
        value_loss, critic_loss, actor_loss, metrics = iql_losses(
            batch, nets.critic, critic_target, nets.value, nets.raw_policy, cfg.gamma, cfg.expectile,
            cfg.awr_beta, cfg.awr_max_weight, cfg.target_subset, generator)
    return cvae_loss.float() + value_loss + critic_loss + actor_loss, {**metrics, **cvae_metrics}


def plas_latent_loss(nets: OfflineNets, obs: torch.Tensor) -> torch.Tensor:
    """PLAS: maximise Q(s, D(s, mu_z(s))); only the latent policy should receive its gradient.

    The decoder may run under a bf16 autocast; the critic always in fp32 (see `offline_losses`).
    """
    latent_action = nets.cvae.decode(obs, nets.latent_policy.mean_action(obs))
    with torch.autocast(obs.device.type, enabled=False):
        return -nets.critic(obs, latent_action.float()).mean()


class SupportScorer:
    """The dataset CVAE's support score of (s, a) and its calibrated threshold, for raw observations.

    Shared by the runner's out-of-support counting and every agent, so 'out of support' means one thing.
    """

    def __init__(self, nets: OfflineNets) -> None:
        self.nets = nets

    @property
    def threshold(self) -> float:
        return float(self.nets.support_threshold)

    @torch.no_grad()
    def score(self, obs: np.ndarray, action: np.ndarray) -> float:
        device = self.nets.device
        s = self.nets.normalizer(torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0))
        a = torch.as_tensor(action, dtype=torch.float32, device=device).unsqueeze(0)
        return float(self.nets.cvae.support_score(s, a)[0])
