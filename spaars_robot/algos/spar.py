"""SPAR: support-preserving action rectification (Zhao, Pan, Liang, Lin, arXiv 2605.27877; methods.md section 2).

A frozen behaviour-cloning anchor pi_base and a bounded residual around it:

    pi(s) = clip(pi_base(s) + eps * tanh(Delta(s, pi_base(s))), -1, 1)

trained in three offline stages (train/spar_offline.py owns the loop): (i) the anchor by regression onto the
dataset actions, then the residual by regression onto what the anchor misses (residual regression, fitting the
data manifold); (ii) the conservative value is the shared IQL expectile critic of the shared pretraining (every
algorithm starts from the same critic, so comparisons stay fair; IQL's in-sample expectile is the conservative
estimate the paper names, never queried outside the data during its own training); (iii) local improvement by
Latent Self-Imitation (`lsi_loss`): residual candidates are drawn in the dataset CVAE's latent space around the
encoding of the current action, decoded (so every candidate lies on the learned data manifold), clipped to the
residual's trust region, weighted by the conservative critic, and the residual regresses onto them. There is
never a value gradient through the action, which is the paper's point: a gradient pushes the action off the
manifold along its normal, a weighted regression onto on-manifold candidates cannot.

The choices the paper does not state (written down in docs/spar.md): candidates per state (`candidates`), the
latent distribution (Gaussian around the encoder mean, std = `latent_sigma` x the dataset's spread of latent
codes per dimension, with the current action's own encoding as candidate 0), the weight form (softmax over a
state's candidates of Q_min / (temperature x the batch's mean within-state std of Q_min): scale-free, so one
temperature serves any reward scale), and the residual bound `residual_bound`.

`SPARAgent` continues online (`--algo spar`): the IQL critic keeps learning on the same 50/50 batches as every
algorithm, the residual keeps improving by LSI against it. `--algo bc` is the anchor alone (no residual, no
updates): the behaviour-cloning baseline of the SPAR table, through the same runner and evaluation. `--algo td3bc`
is the value-gradient actor the paper argues against, built so that LSI is the only difference: the same anchor,
freed (residual off), improved by TD3+BC's actor loss on the same critic for the same number of offline updates as
LSI, then online on the same batches with the same exploration noise.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from spaars_robot.algos.base import fused_adam, polyak_update
from spaars_robot.algos.iql import iql_value_critic_losses
from spaars_robot.nn.critics import QEnsemble
from spaars_robot.nn.cvae import CVAE
from spaars_robot.nn.mlp import mlp

if TYPE_CHECKING:
    from spaars_robot.algos.offline import OfflineNets
    from spaars_robot.config.training import SPARConfig, TrainConfig


class RectifiedPolicy(nn.Module):
    """pi(s) = clip(pi_base(s) + residual_on * eps * tanh(Delta(s, pi_base(s))), -1, 1), in normalised-obs space.

    Deterministic, like TD3+BC's actor: `mean_action` is what is evaluated, exported and served. The anchor is
    frozen once fitted (`freeze_anchor`); only the residual learns afterwards. `residual_on` = 0 gives the bare
    anchor (the BC baseline) with the same module, so export and serving need no second code path.
    """

    def __init__(self, obs_dim: int, action_dim: int, latent_dim: int, hidden: tuple[int, ...], bound: float,
                 zero_init: bool = True) -> None:
        super().__init__()
        self.anchor = mlp(obs_dim, hidden, action_dim)
        self.residual_net = mlp(obs_dim + action_dim, hidden, action_dim)
        self.bound = bound
        if zero_init:  # Delta = 0 at initialisation: the policy starts exactly as the anchor
            last = self.residual_net[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.register_buffer("residual_on", torch.tensor(1.0))
        self.register_buffer("latent_scale", torch.ones(latent_dim))  # per-dim spread of dataset latent codes

    def base_action(self, s: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.anchor(s))

    def residual(self, s: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """The bounded correction: |Delta| <= bound in every dimension, always."""
        return self.residual_on * self.bound * torch.tanh(self.residual_net(torch.cat([s, base], -1)))

    def mean_action(self, s: torch.Tensor) -> torch.Tensor:
        base = self.base_action(s)
        return (base + self.residual(s, base)).clamp(-1.0, 1.0)

    def freeze_anchor(self) -> None:
        self.anchor.requires_grad_(False)

    def residual_parameters(self) -> list[nn.Parameter]:
        return list(self.residual_net.parameters())


def make_rectified(obs_dim: int, action_dim: int, latent_dim: int, cfg: SPARConfig) -> RectifiedPolicy:
    return RectifiedPolicy(obs_dim, action_dim, latent_dim, cfg.hidden, cfg.residual_bound, cfg.zero_init)


def bc_loss(policy: RectifiedPolicy, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Stage (i), anchor: squared error to the dataset action (the conditional mean; TD3+BC's BC term)."""
    return (policy.base_action(obs) - action).pow(2).sum(-1).mean()


def residual_regression_loss(policy: RectifiedPolicy, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Stage (i), residual: regress Delta onto what the frozen anchor misses, within the trust region."""
    with torch.no_grad():
        base = policy.base_action(obs)
        target = (action - base).clamp(-policy.bound, policy.bound)
    return (policy.residual(obs, base) - target).pow(2).sum(-1).mean()


def candidate_weights(q: torch.Tensor, temperature: float) -> torch.Tensor:
    """Self-imitation weights over a state's candidates ([B, K] -> [B, K], rows sum to 1).

    softmax(Q / (temperature * spread)), spread = the batch's mean within-state std of Q: the weights depend on
    how candidates rank against each other at a state, not on the reward scale.
    """
    spread = q.std(1).mean().clamp_min(1e-6)
    return torch.softmax(q / (temperature * spread), dim=1)


def lsi_loss(policy: RectifiedPolicy, cvae: CVAE, critic: QEnsemble, obs: torch.Tensor, cfg: SPARConfig,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage (iii), Latent Self-Imitation: a weighted regression of the residual onto on-manifold candidates."""
    batch, k = obs.shape[0], cfg.candidates
    with torch.no_grad():
        base = policy.base_action(obs)
        current = (base + policy.residual(obs, base)).clamp(-1.0, 1.0)
        mu, _ = cvae.encode(obs, current)
        noise = torch.randn((batch, k, mu.shape[-1]), generator=generator, dtype=mu.dtype, device=mu.device)
        noise[:, 0] = 0.0  # candidate 0: the current action projected onto the manifold
        z = mu.unsqueeze(1) + cfg.latent_sigma * policy.latent_scale * noise
        s_rep = obs.unsqueeze(1).expand(batch, k, obs.shape[-1]).reshape(batch * k, -1)
        with torch.autocast(obs.device.type, dtype=torch.bfloat16, enabled=cfg.lsi_decode_bf16):
            decoded = cvae.decode(s_rep, z.reshape(batch * k, -1)).float().reshape(batch, k, -1)
        target = (decoded - base.unsqueeze(1)).clamp(-policy.bound, policy.bound)
        executed = (base.unsqueeze(1) + target).clamp(-1.0, 1.0)
        q = critic(s_rep, executed.reshape(batch * k, -1)).min(0).values.reshape(batch, k)
        weights = candidate_weights(q, cfg.temperature)
    predicted = policy.residual(obs, base)
    loss = (weights.unsqueeze(-1) * (predicted.unsqueeze(1) - target).pow(2)).sum(-1).sum(1).mean()
    metrics = {"spar/lsi_loss": loss.detach(), "spar/weight_max": weights.max(1).values.mean(),
               "spar/q_gain": ((weights * q).sum(1) - q[:, 0]).mean(),
               "spar/residual_abs": predicted.detach().abs().mean()}
    return loss, metrics


def value_gradient_actor(policy: RectifiedPolicy) -> RectifiedPolicy:
    """SPAR's policy with the residual off and the anchor network free: TD3+BC's actor, started where SPAR starts."""
    actor = copy.deepcopy(policy)
    actor.residual_on.fill_(0.0)
    actor.anchor.requires_grad_(True)
    return actor


def td3bc_loss(policy: RectifiedPolicy, critic: QEnsemble, obs: torch.Tensor, action: torch.Tensor,
               alpha: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """TD3+BC's actor loss (Fujimoto and Gu 2021) on the freed anchor: lambda Q(s, pi(s)) - ||pi(s) - a||^2.

    lambda = alpha / mean |Q| keeps the two terms comparable at any reward scale; Q is the ensemble mean, as for
    SPAARS's gated raw actor, so both value-gradient actors of this project read the critic the same way.
    """
    predicted = policy.base_action(obs)
    q = critic(obs, predicted).mean(0)
    lam = alpha / q.abs().mean().detach().clamp_min(1e-6)
    bc = (predicted - action).pow(2).sum(-1).mean()
    return -lam * q.mean() + bc, {"td3bc/q": q.mean().detach(), "td3bc/bc_error": bc.detach()}


@torch.no_grad()
def fit_latent_scale(policy: RectifiedPolicy, cvae: CVAE, obs: torch.Tensor, action: torch.Tensor) -> None:
    """latent_scale = per-dimension std of the encoder means of dataset pairs: candidates' spread is relative to it."""
    mu, _ = cvae.encode(obs, action)
    policy.latent_scale.copy_(mu.std(0).clamp_min(1e-3))


class SPARAgent:
    """SPAR online (`spar`): IQL critic updates on 50/50 batches, residual by LSI; `bc`: the anchor, frozen;
    `td3bc`: the same critic updates, the freed anchor by TD3+BC's actor loss (`policy` from `value_gradient_actor`).
    """

    def __init__(self, nets: OfflineNets, config: TrainConfig, generator: torch.Generator,
                 policy: RectifiedPolicy) -> None:
        self.nets, self.cfg, self.spar_cfg = nets, config.online, config.spar
        self.policy, self.generator = policy, generator
        self.variant = config.algo  # spar | bc
        self.phase = self.variant
        if self.variant == "bc":
            self.policy.residual_on.fill_(0.0)
        self.critic_target = copy.deepcopy(nets.critic).requires_grad_(False)
        self.critic_opt = fused_adam(list(nets.critic.parameters()) + list(nets.value.parameters()), self.cfg.lr)
        # td3bc learns the whole (freed) anchor network, spar only its residual; one optimiser either way
        self.learned = list(policy.anchor.parameters()) if self.variant == "td3bc" else policy.residual_parameters()
        self.policy_opt = fused_adam(self.learned, self.spar_cfg.lr)

    def _s(self, obs: np.ndarray) -> torch.Tensor:
        return self.nets.normalizer(torch.as_tensor(obs, dtype=torch.float32, device=self.nets.device).unsqueeze(0))

    def begin_episode(self, evaluation: bool = False) -> None:
        pass

    @torch.no_grad()
    def explore(self, obs: np.ndarray) -> tuple[np.ndarray, str]:
        action = self.policy.mean_action(self._s(obs))
        noise = torch.randn(action.shape, generator=self.generator, device=action.device) * self.cfg.raw_explore_noise
        return (action + noise).clamp(-1.0, 1.0)[0].cpu().numpy(), "raw"

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> tuple[np.ndarray, str]:
        return self.policy.mean_action(self._s(obs))[0].cpu().numpy(), "raw"

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.variant == "bc":
            return {}
        cfg, nets = self.cfg, self.nets
        value_loss, critic_loss, *_ = iql_value_critic_losses(  # the shared critic keeps learning as it was trained
            batch, nets.critic, self.critic_target, nets.value, cfg.gamma, cfg.expectile, cfg.target_subset,
            self.generator)
        self.critic_opt.zero_grad(set_to_none=True)
        (value_loss + critic_loss).backward()
        self.critic_opt.step()
        polyak_update(self.critic_target, nets.critic, cfg.tau)
        if self.variant == "td3bc":
            loss, metrics = td3bc_loss(self.policy, nets.critic, batch["obs"], batch["action"], cfg.alpha_bc)
        else:
            loss, metrics = lsi_loss(self.policy, nets.cvae, nets.critic, batch["obs"], self.spar_cfg, self.generator)
        self.policy_opt.zero_grad(set_to_none=True)
        loss.backward(inputs=self.learned)
        self.policy_opt.step()
        return {"online/critic_loss": critic_loss.detach(), "online/value_loss": value_loss.detach(), **metrics}

    def after_eval(self, step: int, record: dict, recent_obs: torch.Tensor) -> dict:
        return {}

    def run_summary(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {"nets": self.nets.state_dict(), "spar": self.policy.state_dict(),
                "critic_target": self.critic_target.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "residual_opt": self.policy_opt.state_dict()}  # the key spar checkpoints had: they still resume

    def load_state_dict(self, state: dict) -> None:
        self.nets.load_state_dict(state["nets"])
        self.policy.load_state_dict(state["spar"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.policy_opt.load_state_dict(state["residual_opt"])
