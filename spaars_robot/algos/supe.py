"""SUPE (Wilcoxson et al. 2024; methods.md 3.2): online RL over OPAL skills with optimistic offline data.

The skill VAE (nn/skills.py) is learned offline and frozen. Online, a high-level SAC picks a skill every H env
steps; its decoder acts for those H steps. The high level learns from 50/50 batches of H-step chunks of the dataset
and of the online replay (data/chunks.py), rewarded optimistically: the chunk's discounted reward plus `rnd_coef` x
an RND novelty of (s, u). Online chunks are the high-level transitions that happened: they start where the high
level chose a skill, and carry the skill it executed (recorded here, per replay index, as the runner fills its one
per-step replay in step order). Offline chunks are relabelled with the skill the frozen encoder reads in them,
u = tanh(encoder mean), computed once for every chunk of the dataset before the agent is built
(train/skills_offline.label_offline_chunks). The dataset is
treated as unlabelled, as SUPE does: offline chunks get a reward model's prediction (kitchen) or the dataset's
minimum reward (antmaze), and no terminals.

Where this differs from the authors' code, and why (docs/supe.md): `online.utd` high-level updates per high-level
step (SUPE: 4 x 20 critic steps), the budget a 2-core machine can pay; the target discounts
a chunk by gamma^H (a semi-MDP step of H env steps); an episode's last skill, cut short by the episode's end before
its H steps, is not a training transition.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

from spaars_robot.algos.base import fused_adam, polyak_update
from spaars_robot.algos.offline import OfflineNets
from spaars_robot.config.training import TrainConfig
from spaars_robot.nn.critics import QEnsemble
from spaars_robot.nn.mlp import mlp
from spaars_robot.nn.policies import TanhGaussianPolicy
from spaars_robot.nn.rnd import RND
from spaars_robot.nn.skills import SkillVAE

RND_FEATURES = 256  # SUPE's RND: MLP 256x3 -> 256 features
SQUASH_EPS = 1e-5  # SUPE's tanh converter: u clipped to +-(1 - eps) before arctanh


def skill_of(u: torch.Tensor) -> torch.Tensor:
    """The skill z the decoder takes, from the high level's squashed action u in (-1, 1) (SUPE's tanh space)."""
    return torch.atanh(u.clamp(-1 + SQUASH_EPS, 1 - SQUASH_EPS))


def skill_from_action(skills: SkillVAE, space: str, u: torch.Tensor, s0: torch.Tensor) -> torch.Tensor:
    """The skill z for the high level's u chosen at (normalised) state s0, in `supe.skill_space`.

    Why `prior` exists: nothing anchors a learned prior's scale, and after `supe-short` pretraining (kitchen,
    antmaze) its means lie at |z| 5-8.5 with a spread of 0.09-0.15 per dimension, the data's skills within ~2 of
    those standard deviations (BENCHMARKS "Where the high level's skills land"). In SUPE's tanh space that is a
    small, state-dependent patch of the box (up to half its coordinates saturated, |u| > 0.99), and the trained
    tanh-Gaussian actor's skills sat ~70 prior standard deviations from it: 97-100 % of their decoded actions were
    out of the dataset's support. Whitened by the prior at the state, u = 0 is the prior's mean skill and a data
    skill one standard deviation out is u = tanh(1)."""
    white = skill_of(u)
    if space == "tanh":
        return white
    mean, std = skills.prior_dist(s0)
    return mean + std * white


def action_from_skill(skills: SkillVAE, space: str, z: torch.Tensor, s0: torch.Tensor) -> torch.Tensor:
    """The high level's u that names skill z at state s0 (inverse of skill_from_action): offline chunks' labels and
    the executed prior skills are stored in u, the high level's action space."""
    if space == "tanh":
        return torch.tanh(z)
    mean, std = skills.prior_dist(s0)
    return torch.tanh((z - mean) / std)


class SkillHolder:
    """The skill in force and how many of its H steps are taken: per trajectory, one for training, one for
    evaluation (and the same state a server keeps per session)."""

    def __init__(self) -> None:
        self.z: torch.Tensor | None = None
        self.steps = 0

    def reset(self) -> None:
        self.z, self.steps = None, 0


class SUPEAgent:
    phase: str
    online_phase = "supe"  # the phase once the prior's skills are done (SPAARS-SUPE: its latent phase)

    def __init__(self, nets: OfflineNets, skills: SkillVAE, config: TrainConfig, generator: torch.Generator,
                 offline_min_reward: float, offline_labels: torch.Tensor, offline_reward: str | None = None) -> None:
        """`offline_reward`: supe.offline_reward with `auto` resolved for the task (the builder does it)."""
        self.nets, self.skills, self.config, self.cfg = nets, skills, config, config.supe
        self.offline_reward = offline_reward or config.supe.offline_reward
        if self.offline_reward not in ("min", "model", "data"):
            raise ValueError(f"supe.offline_reward {self.offline_reward!r} must be resolved to min, model or data")
        self.generator = generator
        self.gamma_h = config.online.gamma ** self.cfg.horizon
        self.offline_min_reward = offline_min_reward  # already in the buffers' (scaled) reward units
        obs_dim, k, device = nets.normalizer.mean.numel(), self.cfg.skill_dim, nets.device
        hidden = self.cfg.high_hidden
        with torch.random.fork_rng():
            torch.manual_seed(config.seed + 999)
            self.actor = TanhGaussianPolicy(obs_dim, k, hidden).to(device)
            self.critic = QEnsemble(obs_dim, k, hidden, self.cfg.ensemble_size, layer_norm=True).to(device)
            self.rnd = RND(obs_dim + k, hidden, RND_FEATURES).to(device)
            self.reward_model = mlp(obs_dim + k, hidden, 1).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(self.cfg.init_temperature), device=device, requires_grad=True)
        self.target_entropy = -k / 2.0
        lr = self.cfg.lr
        self.actor_opt = fused_adam(self.actor.parameters(), lr)
        self.critic_opt = fused_adam(self.critic.parameters(), lr)
        self.alpha_opt = fused_adam([self.log_alpha], lr)
        self.rnd_opt = fused_adam(self.rnd.predictor.parameters(), lr)
        self.reward_opt = fused_adam(self.reward_model.parameters(), lr)
        self.train_skill, self.eval_skill = SkillHolder(), SkillHolder()
        self.explore_steps = 0
        self.offline_labels = offline_labels
        capacity = max(config.online.env_steps, 1)  # the runner's online replay: one index per env step, in order
        self.executed = torch.zeros(capacity, k, device=device)  # u the high level executed from each index
        self.skill_started = torch.zeros(capacity, dtype=torch.bool, device=device)
        self.phase = "prior" if self.cfg.prior_steps > 0 else self.online_phase

    # -- acting ------------------------------------------------------------------------------------
    def _s(self, obs: np.ndarray) -> torch.Tensor:
        return self.nets.normalizer(torch.as_tensor(obs, dtype=torch.float32, device=self.nets.device).unsqueeze(0))

    def begin_episode(self, evaluation: bool = False) -> None:
        (self.eval_skill if evaluation else self.train_skill).reset()

    @torch.no_grad()
    def explore(self, obs: np.ndarray) -> tuple[np.ndarray, str]:
        """A new skill every H steps (from the prior during the first `prior_steps`, then the high-level policy,
        both sampled); the decoder samples the action, clipped to the action box."""
        self.explore_steps += 1
        index = self.explore_steps - 1  # this step's index in the online replay
        s, holder = self._s(obs), self.train_skill
        if holder.z is None or holder.steps % self.cfg.horizon == 0:
            if self.explore_steps <= self.cfg.prior_steps:
                mean, std = self.skills.prior_dist(s)
                holder.z = mean + std * torch.randn(mean.shape, generator=self.generator, device=mean.device)
            else:
                holder.z = skill_from_action(self.skills, self.cfg.skill_space,
                                             self.actor.sample(s, self.generator)[0], s)
            if index < self.skill_started.numel():
                self.skill_started[index] = True
                self.executed[index] = action_from_skill(self.skills, self.cfg.skill_space, holder.z, s)[0]
        if self.phase == "prior" and self.explore_steps > self.cfg.prior_steps:
            self.phase = self.online_phase
        holder.steps += 1
        return self.skills.decode_sample(s, holder.z, self.generator)[0].cpu().numpy(), "latent"

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> tuple[np.ndarray, str]:
        """Deterministic: the policy's mean skill every H steps, the decoder's mean action."""
        s, holder = self._s(obs), self.eval_skill
        if holder.z is None or holder.steps % self.cfg.horizon == 0:
            holder.z = skill_from_action(self.skills, self.cfg.skill_space, self.actor.mean_action(s), s)
        holder.steps += 1
        return self.skills.decode_mean(s, holder.z)[0].cpu().numpy(), "latent"

    # -- learning ----------------------------------------------------------------------------------
    @torch.no_grad()
    def chunk_skills(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """u of every chunk of a batch [B, k]: the executed skill (online chunks), the encoder's label (dataset)."""
        start = batch["start"]
        return torch.where(batch["online"].unsqueeze(-1), self.executed[start.clamp(max=self.executed.shape[0] - 1)],
                           self.offline_labels[start.clamp(max=self.offline_labels.shape[0] - 1)])

    @torch.no_grad()
    def relabel(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """High-level transitions of a chunk batch: skill label, optimistic reward, terminal mask.

        `batch` holds chunks (data/chunks.mixed_chunk_batch): `online` [B] and `start` [B] say where each is from.
        """
        s0, online = batch["obs"][:, 0], batch["online"]
        u = self.chunk_skills(batch)
        if self.offline_reward == "data":
            offline_reward, offline_done = batch["chunk_reward"], batch["done"]
        else:
            if self.offline_reward == "model":
                offline_reward = self.reward_model(torch.cat([s0, u], -1)).squeeze(-1)
            else:
                discounts = sum(self.config.online.gamma ** k for k in range(self.cfg.horizon))
                offline_reward = torch.full_like(batch["chunk_reward"], self.offline_min_reward * discounts)
            offline_done = torch.zeros_like(batch["done"])
        reward = torch.where(online, batch["chunk_reward"], offline_reward)
        bonus = self.rnd.novelty(torch.cat([s0, u], -1))
        done = torch.where(online, batch["done"], offline_done)
        return {"obs": s0, "skill": u, "reward": reward + self.cfg.rnd_coef * bonus, "bonus": bonus,
                "next_obs": batch["next_obs"], "done": done}

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One high-level update, on the env steps that end a skill's H steps (SUPE's cadence: its updates follow
        high-level steps); the runner's calls on the other env steps do nothing. So `online.utd` is updates per
        high-level step here (SUPE: 4 x (20 critic + 1 actor) per high-level step)."""
        if self.explore_steps <= self.cfg.prior_steps:  # SUPE: updates start with the high-level policy
            return {}
        if self.explore_steps % self.cfg.horizon != 0:
            return {}
        cfg, hl = self.cfg, self.relabel(batch)
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():  # no entropy term in the backup (SUPE: backup_entropy=False)
            next_u = self.actor.sample(hl["next_obs"], self.generator)[0]
            target = self.critic_target.target_min(hl["next_obs"], next_u, cfg.target_subset, self.generator)
            y = hl["reward"] + self.gamma_h * (1.0 - hl["done"]) * target
        q = self.critic(hl["obs"], hl["skill"])
        critic_loss = (q - y).pow(2).mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        u, logp, _ = self.actor.sample(hl["obs"], self.generator)
        actor_loss = (alpha * logp - self.critic(hl["obs"], u).mean(0)).mean()  # RLPD: the ensemble mean
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=list(self.actor.parameters()))
        self.actor_opt.step()
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()

        metrics = {"supe/critic_loss": critic_loss.detach(), "supe/actor_loss": actor_loss.detach(),
                   "supe/alpha": alpha, "supe/q": q.mean().detach(), "supe/bonus": hl["bonus"].mean()}
        online = batch["online"]
        if online.any():  # RND and the reward model learn from online chunks only (SUPE)
            pair = torch.cat([hl["obs"][online], hl["skill"][online]], -1)
            rnd_loss = self.rnd.novelty(pair).mean()
            self.rnd_opt.zero_grad(set_to_none=True)
            rnd_loss.backward()
            self.rnd_opt.step()
            metrics["supe/rnd_loss"] = rnd_loss.detach()
            if self.offline_reward == "model":
                reward_loss = (self.reward_model(pair).squeeze(-1) - batch["chunk_reward"][online]).pow(2).mean()
                self.reward_opt.zero_grad(set_to_none=True)
                reward_loss.backward()
                self.reward_opt.step()
                metrics["supe/reward_model_loss"] = reward_loss.detach()
        polyak_update(self.critic_target, self.critic, self.config.online.tau)
        return metrics

    def after_eval(self, step: int, record: dict, recent_obs: torch.Tensor) -> dict:
        return {}

    def run_summary(self) -> dict:
        return {}

    # -- checkpoint --------------------------------------------------------------------------------
    def _modules(self) -> dict:
        return {"actor": self.actor, "critic": self.critic, "critic_target": self.critic_target, "rnd": self.rnd,
                "reward_model": self.reward_model, "actor_opt": self.actor_opt, "critic_opt": self.critic_opt,
                "alpha_opt": self.alpha_opt, "rnd_opt": self.rnd_opt, "reward_opt": self.reward_opt}

    def state_dict(self) -> dict:
        """Checkpoints are taken at episode ends, where both skill holders are reset: no skill state to save.

        The frozen pretraining nets and skill VAE are saved too, so a run exports without the stage caches."""
        return {**{name: m.state_dict() for name, m in self._modules().items()},
                "nets": self.nets.state_dict(), "skills": self.skills.state_dict(),
                "log_alpha": self.log_alpha.detach().clone(), "generator": self.generator.get_state(),
                "explore_steps": self.explore_steps, "phase": self.phase,
                "executed": self.executed[:self.explore_steps].clone(),
                "skill_started": self.skill_started[:self.explore_steps].clone()}

    def load_state_dict(self, state: dict) -> None:
        from spaars_robot.nn.device import set_generator_state

        for name, module in self._modules().items():
            module.load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        set_generator_state(self.generator, state["generator"])
        self.explore_steps, self.phase = int(state["explore_steps"]), str(state["phase"])
        n = self.explore_steps
        self.executed[:n], self.skill_started[:n] = state["executed"], state["skill_started"]
