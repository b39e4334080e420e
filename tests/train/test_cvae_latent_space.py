"""The CVAE's latent box must be an action space the latent policy can steer, not one action per state.

Data from one stochastic policy (how our datasets and D4RL's medium sets are made) leaves little action
variance once the state is known. Under PLAS's KL weight of 0.5 the collapsed posterior (decoder ignores z)
is then the loss optimum, and latent exploration degenerates into behaviour cloning. These tests train the
real CVAE on such data and check that the default weight keeps z meaningful while 0.5 does not.
"""
from __future__ import annotations

import torch

from spaars_robot.algos.base import fused_adam
from spaars_robot.config.training import PretrainConfig
from spaars_robot.nn.cvae import CVAE

# Residual action variance given s: 0.0625, below the 0.5 / 4 = 0.125 under which PLAS's weight makes the collapsed
# posterior optimal (benchmarks/cvae_kl_weight.py derives the bound), above the 0.05 / 4 of the default.
OBS_DIM, ACTION_DIM, RESIDUAL_STD = 6, 3, 0.25


def _single_policy_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(OBS_DIM, ACTION_DIM, generator=g) * 0.5
    obs = torch.randn(n, OBS_DIM, generator=g)
    action = (torch.tanh(obs @ w) * 0.7 + RESIDUAL_STD * torch.randn(n, ACTION_DIM, generator=g)).clamp(-1, 1)
    return obs, action


def _train(kl_weight: float, steps: int = 2000, seed: int = 0) -> tuple[CVAE, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    obs, action = _single_policy_data(20_000, seed)
    cvae = CVAE(OBS_DIM, ACTION_DIM, 2 * ACTION_DIM, (64, 64), kl_weight)
    opt = fused_adam(cvae.parameters(), 1e-3)
    for _ in range(steps):
        idx = torch.randint(0, obs.shape[0], (256,), generator=g)
        loss, _ = cvae.loss(obs[idx], action[idx], g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return cvae, *_single_policy_data(2_000, seed + 1)


@torch.no_grad()
def _box_spread(cvae: CVAE, obs: torch.Tensor, z_max: float) -> float:
    """Mean per-dimension std of D(s, z) over z uniform in the latent box: how far the latent policy can move."""
    g = torch.Generator().manual_seed(7)
    decodes = torch.stack([cvae.decode(obs, (torch.rand(obs.shape[0], cvae.latent_dim, generator=g) * 2 - 1) * z_max)
                           for _ in range(32)])
    return float(decodes.std(0).mean())


@torch.no_grad()
def _reach_ratio(cvae: CVAE, obs: torch.Tensor, action: torch.Tensor, z_max: float) -> float:
    """Best-of-samples decode error to held-out actions, relative to the error of D(s, 0)."""
    g = torch.Generator().manual_seed(8)
    best = torch.full((obs.shape[0],), float("inf"))
    for _ in range(128):
        z = (torch.rand(obs.shape[0], cvae.latent_dim, generator=g) * 2 - 1) * z_max
        best = torch.minimum(best, (cvae.decode(obs, z) - action).pow(2).mean(-1))
    centre = (cvae.decode(obs, torch.zeros(obs.shape[0], cvae.latent_dim)) - action).pow(2).mean(-1)
    return float(best.mean() / centre.mean())


def test_default_kl_weight_keeps_the_latent_space_steerable() -> None:
    cfg = PretrainConfig()
    cvae, obs, action = _train(cfg.cvae_kl_weight)
    spread = _box_spread(cvae, obs, cfg.z_max)
    assert spread > 0.5 * RESIDUAL_STD, f"decoder ignores z at the default KL weight: spread {spread:.4f}"
    assert _reach_ratio(cvae, obs, action, cfg.z_max) < 0.6


def test_plas_kl_weight_collapses_on_single_policy_data() -> None:
    """The failure the default avoids: at 0.5 the latent box decodes to (nearly) one action per state."""
    cvae, obs, action = _train(0.5)
    assert _box_spread(cvae, obs, PretrainConfig().z_max) < 0.2 * RESIDUAL_STD
    assert _reach_ratio(cvae, obs, action, PretrainConfig().z_max) > 0.8
