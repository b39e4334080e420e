"""Soft Actor-Critic (Haarnoja et al. 2018, "SAC: Algorithms and Applications", Alg. 1).

Used as the behaviour-policy trainer for dataset collection and as the online-from-scratch reference
(`--algo sac`), through the same runner loop (train/online_loop.py) in both. Twin Q as a 2-member batched ensemble, automatic entropy tuning, fused Adam.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from spaars_robot.algos.base import fused_adam, polyak_update
from spaars_robot.nn.critics import QEnsemble
from spaars_robot.nn.device import make_generator, set_generator_state
from spaars_robot.nn.policies import TanhGaussianPolicy


class SACConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: tuple[int, ...] = Field((256, 256), description="MLP widths of actor and critics")
    lr: float = Field(3e-4, gt=0, description="Adam learning rate for actor, critics and temperature")
    gamma: float = Field(0.99, gt=0, lt=1, description="discount")
    tau: float = Field(0.005, gt=0, le=1, description="Polyak rate of the target critics")
    batch_size: int = Field(256, gt=0)
    init_temperature: float = Field(1.0, gt=0)
    target_entropy_per_dim: float = Field(-1.0, description="target entropy = this x action_dim")


class SAC:
    """SAC as an `Agent`: the same object is the behaviour-policy trainer of `data collect` and `--algo sac`.

    `explore` draws uniform actions for the first `random_steps` calls (warm-up), then samples the policy.
    The networks are initialised on the CPU (the same weights for every device) and then moved to `device`;
    `generator`, when given, must draw on that device (nn/device.make_generator).
    """

    phase = "sac"

    def __init__(self, obs_dim: int, action_dim: int, config: SACConfig, seed: int,
                 generator: torch.Generator | None = None, random_steps: int = 0,
                 device: torch.device | str = "cpu") -> None:
        self.config = config
        self.generator = generator if generator is not None else make_generator(seed, device)
        torch.manual_seed(seed)
        self.actor = TanhGaussianPolicy(obs_dim, action_dim, config.hidden).to(device)
        self.critic = QEnsemble(obs_dim, action_dim, config.hidden, ensemble_size=2, layer_norm=False).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(np.log(config.init_temperature), dtype=torch.float32, device=device,
                                      requires_grad=True)
        self.target_entropy = config.target_entropy_per_dim * action_dim
        self.actor_opt = fused_adam(self.actor.parameters(), config.lr)
        self.critic_opt = fused_adam(self.critic.parameters(), config.lr)
        self.alpha_opt = fused_adam([self.log_alpha], config.lr)
        self.random_steps = random_steps
        self.explore_steps = 0

    def begin_episode(self, evaluation: bool = False) -> None:
        pass

    @torch.no_grad()
    def explore(self, obs: np.ndarray) -> tuple[np.ndarray, str]:
        self.explore_steps += 1
        if self.explore_steps <= self.random_steps:
            uniform = torch.rand(self.actor.out_dim, generator=self.generator, device=self.log_alpha.device)
            return (uniform * 2 - 1).cpu().numpy(), "raw"
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.log_alpha.device).unsqueeze(0)
        return self.actor.sample(obs_t, self.generator)[0][0].cpu().numpy(), "raw"

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> tuple[np.ndarray, str]:
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.log_alpha.device).unsqueeze(0)
        return self.actor.mean_action(obs_t)[0].cpu().numpy(), "raw"

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.config
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_action, next_logp, _ = self.actor.sample(batch["next_obs"], self.generator)
            target_q = self.critic_target(batch["next_obs"], next_action).min(0).values - alpha * next_logp
            y = batch["reward"] + cfg.gamma * (1.0 - batch["done"]) * target_q
        q = self.critic(batch["obs"], batch["action"])
        critic_loss = (q - y).pow(2).mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        action, logp, _ = self.actor.sample(batch["obs"], self.generator)
        q_pi = self.critic(batch["obs"], action).min(0).values
        actor_loss = (alpha * logp - q_pi).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        polyak_update(self.critic_target, self.critic, cfg.tau)
        return {"sac/critic_loss": critic_loss.detach(), "sac/actor_loss": actor_loss.detach(),
                "sac/alpha": alpha, "sac/q": q.mean().detach()}

    def after_eval(self, step: int, record: dict, recent_obs: torch.Tensor) -> dict:
        return {}

    def run_summary(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
            "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(), "generator": self.generator.get_state(),
            "explore_steps": self.explore_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        if "sac" in state:  # a `train --algo sac` checkpoint written before SAC implemented Agent itself
            state = {**state["sac"], "explore_steps": state["steps"]}
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        set_generator_state(self.generator, state["generator"])  # reseeded when saved on another device
        self.explore_steps = int(state.get("explore_steps", 0))
