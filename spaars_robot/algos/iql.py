"""Implicit Q-Learning (Kostrikov, Nair, Levine 2022): the losses, and IQL online fine-tuning.

Offline pretraining of every algorithm uses `iql_losses` for the shared critic ensemble, so IQL,
SPAARS, latent-only and raw fine-tuning all start from the same critic (a fair comparison).
`IQLAgent` continues the same updates online on 50/50 offline/online batches and acts with its
advantage-weighted (AWR) raw policy.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch

from spaars_robot.algos.base import fused_adam, polyak_update
from spaars_robot.nn.critics import QEnsemble, ValueNet
from spaars_robot.nn.policies import TanhGaussianPolicy

if TYPE_CHECKING:
    from spaars_robot.algos.offline import OfflineNets
    from spaars_robot.config.training import TrainConfig


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Asymmetric L2 (IQL eq. 5): weight |tau - 1(diff < 0)| * diff^2, diff = Q - V."""
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return (weight * diff.pow(2)).mean()


def iql_value_critic_losses(
    batch: dict[str, torch.Tensor], critic: QEnsemble, critic_target: QEnsemble, value: ValueNet, gamma: float,
    expectile: float, target_subset: int | None = None, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """IQL's value (expectile of target Q, eq. 5) and critic (TD onto V(s'), eq. 6) losses: the one definition that
    keeps the shared critic learning, in pretraining and online, whatever trains the policy (AWR here, LSI in SPAR).
    Returns (value_loss, critic_loss, target_q, v, q)."""
    obs, action = batch["obs"], batch["action"]
    with torch.no_grad():
        target_q = critic_target.target_min(obs, action, target_subset, generator)
        next_v = value(batch["next_obs"])
        y = batch["reward"] + gamma * (1.0 - batch["done"]) * next_v
    v = value(obs)
    value_loss = expectile_loss(target_q - v, expectile)
    q = critic(obs, action)
    critic_loss = (q - y).pow(2).mean(1).sum()
    return value_loss, critic_loss, target_q, v, q


def iql_losses(
    batch: dict[str, torch.Tensor], critic: QEnsemble, critic_target: QEnsemble, value: ValueNet,
    actor: TanhGaussianPolicy, gamma: float, expectile: float, beta: float, max_weight: float,
    target_subset: int | None = None, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Value, critic and actor (AWR, eq. 7) losses of IQL."""
    value_loss, critic_loss, target_q, v, q = iql_value_critic_losses(
        batch, critic, critic_target, value, gamma, expectile, target_subset, generator)
    with torch.no_grad():
        weight = torch.exp(beta * (target_q - v)).clamp(max=max_weight)
    actor_loss = -(weight * actor.log_prob(batch["obs"], batch["action"])).mean()
    metrics = {"iql/value_loss": value_loss.detach(), "iql/critic_loss": critic_loss.detach(),
               "iql/actor_loss": actor_loss.detach(), "iql/q": q.mean().detach()}
    return value_loss, critic_loss, actor_loss, metrics


class IQLAgent:
    """IQL fine-tuning (IQL `train_finetune.py`): same losses online; acts with the stochastic AWR policy."""

    def __init__(self, nets: OfflineNets, config: TrainConfig, generator: torch.Generator) -> None:
        self.online_cfg = config.online
        self.nets = nets
        self.critic_target = copy.deepcopy(nets.critic).requires_grad_(False)
        self.generator = generator
        lr = self.online_cfg.lr
        self.opt = fused_adam(list(nets.critic.parameters()) + list(nets.value.parameters())
                              + list(nets.raw_policy.parameters()), lr)
        self.phase = "iql"

    def policy_input(self, obs: np.ndarray) -> torch.Tensor:
        s = torch.as_tensor(obs, dtype=torch.float32, device=self.nets.device)
        return self.nets.normalizer(s.unsqueeze(0))

    @torch.no_grad()
    def explore(self, obs: np.ndarray) -> tuple[np.ndarray, str]:
        s = self.policy_input(obs)
        return self.nets.raw_policy.sample(s, self.generator)[0][0].cpu().numpy(), "raw"

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> tuple[np.ndarray, str]:
        return self.nets.raw_policy.mean_action(self.policy_input(obs))[0].cpu().numpy(), "raw"

    def begin_episode(self, evaluation: bool = False) -> None:
        pass

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.online_cfg
        value_loss, critic_loss, actor_loss, metrics = iql_losses(
            batch, self.nets.critic, self.critic_target, self.nets.value, self.nets.raw_policy,
            cfg.gamma, cfg.expectile, cfg.awr_beta, cfg.awr_max_weight, cfg.target_subset, self.generator)
        self.opt.zero_grad(set_to_none=True)
        (value_loss + critic_loss + actor_loss).backward()
        self.opt.step()
        polyak_update(self.critic_target, self.nets.critic, cfg.tau)
        return metrics

    def after_eval(self, step: int, record: dict, recent_obs: torch.Tensor) -> dict:
        return {}

    def run_summary(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {"nets": self.nets.state_dict(), "critic_target": self.critic_target.state_dict(),
                "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.nets.load_state_dict(state["nets"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.opt.load_state_dict(state["opt"])
