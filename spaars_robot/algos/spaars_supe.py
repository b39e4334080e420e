"""SPAARS-SUPE (methods.md 6.7): SUPE's skill exploration first, then a per-step gate hands control to raw actions.

Phases
  prior   SUPE's: skills sampled from the learned prior, no updates yet.
  latent  SUPE exactly (algos/supe.py: the high level picks a skill every H steps, the decoder acts), plus what
          SPAARS adds: a per-step critic Q_lo(s, a) over raw actions (the shared pretraining's critic ensemble,
          trained online by TD on the online per-step transitions with the environment reward; SUPE's critic is
          over (s, skill) at the H-step level and cannot compare two raw actions), and a raw policy mu_raw(s)
          cloned concurrently onto the decoder's mean action D(s_t, z) of the skill in force, on the states of
          every chunk of the batch (dataset chunks with the encoder's skill, online ones with the executed one).
  gated   the high level still picks a skill every H steps; at every step the raw action is executed only where
          the lower confidence bound of Q_lo(s, mu_raw(s)) - Q_lo(s, D(s, z)) over the ensemble clears the gate's
          threshold (algos/gate.py, the same gate as SPAARS); the raw policy improves in TD3+BC form anchored to
          the decoder's action. The high-level transition's reward stays the discounted sum of the H executed
          rewards, whoever executed them.
The switch is SPAARS's TransitionMonitor (algos/transition.py) on the evaluation return, the novelty of recent
states (SUPE's RND over (s, the policy's skill)), the raw policy's BC error against the decoded skill actions and
the gate's rate.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from spaars_robot.algos.base import fused_adam, polyak_update
from spaars_robot.algos.gate import AdvantageGate, choose_scale, gate_lcb, lcb_of, member_advantages
from spaars_robot.algos.offline import OfflineNets
from spaars_robot.algos.supe import SUPEAgent, skill_from_action
from spaars_robot.algos.transition import TransitionMonitor
from spaars_robot.config.training import TrainConfig
from spaars_robot.nn.skills import SkillVAE


def per_step(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The H per-step transitions inside each chunk, flattened to [B * H]: s_t, a_t, r_t, s_{t+1}, done_t.

    A valid chunk has no episode end before its last step, so s_{t+1} is the chunk's next step, and the last
    step's is the chunk's `next_obs`; only the last step can be terminal.
    """
    obs, b, h = batch["obs"], batch["obs"].shape[0], batch["obs"].shape[1]
    next_obs = torch.cat([obs[:, 1:], batch["next_obs"].unsqueeze(1)], 1)
    done = torch.zeros(b, h, device=obs.device, dtype=batch["done"].dtype)
    done[:, -1] = batch["done"]
    return {"obs": obs.reshape(b * h, -1), "action": batch["action"].reshape(b * h, -1),
            "reward": batch["reward"].reshape(b * h), "next_obs": next_obs.reshape(b * h, -1),
            "done": done.reshape(b * h), "online": batch["online"].repeat_interleave(h)}


class SPAARSSUPEAgent(SUPEAgent):
    online_phase = "latent"  # after the prior skills: SUPE's exploration is SPAARS's latent phase

    def __init__(self, nets: OfflineNets, skills: SkillVAE, config: TrainConfig, generator: torch.Generator,
                 offline_min_reward: float, offline_labels: torch.Tensor, offline_reward: str | None = None) -> None:
        super().__init__(nets, skills, config, generator, offline_min_reward, offline_labels, offline_reward)
        oc = config.online
        self.online_cfg = oc
        self.q_lo, self.raw_policy = nets.critic, nets.raw_policy  # the shared per-step critic and AWR policy
        self.q_lo_target = copy.deepcopy(nets.critic).requires_grad_(False)
        self.q_lo_opt = fused_adam(self.q_lo.parameters(), oc.lr)
        self.raw_opt = fused_adam(self.raw_policy.parameters(), oc.lr)
        self.gate = AdvantageGate(oc.gate.tau_rel, oc.gate.hysteresis_rel)
        self.eval_gate = AdvantageGate(oc.gate.tau_rel, oc.gate.hysteresis_rel)
        self.transition = TransitionMonitor(oc.transition)
        self.q_scale = nets.q_scale.clone()
        self.adv_scale = torch.tensor(1.0, device=nets.device)
        self.switch_log: list[dict] = []

    def gate_scale(self) -> torch.Tensor:
        return choose_scale(self.online_cfg.gate.scale, self.q_scale, self.adv_scale)

    def begin_episode(self, evaluation: bool = False) -> None:
        super().begin_episode(evaluation)
        (self.eval_gate if evaluation else self.gate).reset()

    # -- acting ------------------------------------------------------------------------------------
    @torch.no_grad()
    def _raw_wins(self, s: torch.Tensor, z: torch.Tensor, gate: AdvantageGate) -> tuple[bool, torch.Tensor]:
        """The per-step gate at s with skill z in force: (execute raw?, the raw action)."""
        raw = self.raw_policy.mean_action(s)
        lcb = float(gate_lcb(self.q_lo, s, raw, self.skills.decode_mean(s, z), self.online_cfg.gate.kappa)[0])
        return gate.decide(lcb, float(self.gate_scale())), raw

    @torch.no_grad()
    def explore(self, obs: np.ndarray) -> tuple[np.ndarray, str]:
        action, source = super().explore(obs)  # SUPE's skill schedule and decoder sample (and its records)
        if self.phase != "gated":
            return action, source
        use_raw, raw = self._raw_wins(self._s(obs), self.train_skill.z, self.gate)
        if not use_raw:
            return action, source
        noise = torch.randn(raw.shape, generator=self.generator, device=raw.device) * self.online_cfg.raw_explore_noise
        return (raw + noise).clamp(-1.0, 1.0)[0].cpu().numpy(), "raw"

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> tuple[np.ndarray, str]:
        action, source = super().act(obs)
        if self.phase != "gated":
            return action, source
        use_raw, raw = self._raw_wins(self._s(obs), self.eval_skill.z, self.eval_gate)
        return (raw[0].cpu().numpy(), "raw") if use_raw else (action, source)

    # -- learning ----------------------------------------------------------------------------------
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        metrics = super().update(batch)  # the high level, on the env steps that end a skill
        if self.explore_steps <= self.cfg.prior_steps:
            return metrics
        oc = self.online_cfg
        steps = per_step(batch)
        with torch.no_grad():  # the skill in force at every step of every chunk, and its decoded action
            z = skill_from_action(self.skills, self.cfg.skill_space, self.chunk_skills(batch), batch["obs"][:, 0]
                                  ).repeat_interleave(self.cfg.horizon, 0)
            anchor = self.skills.decode_mean(steps["obs"], z)
        online = steps["online"]
        if online.any():  # Q_lo: TD on online per-step transitions, the environment reward (the data is unlabelled)
            s, s_next = steps["obs"][online], steps["next_obs"][online]
            with torch.no_grad():
                next_action = self.skills.decode_mean(s_next, z[online])  # online steps only
                if self.phase == "gated":
                    raw_next = self.raw_policy.mean_action(s_next)
                    lcb = gate_lcb(self.q_lo, s_next, raw_next, next_action, oc.gate.kappa)
                    next_action = torch.where(self.gate.batch_open(lcb, self.gate_scale()).unsqueeze(-1), raw_next,
                                              next_action)
                target = self.q_lo_target.target_min(s_next, next_action, oc.target_subset, self.generator)
                y = steps["reward"][online] + oc.gamma * (1.0 - steps["done"][online]) * target
            q = self.q_lo(s, steps["action"][online])
            q_loss = (q - y).pow(2).mean(1).sum()
            self.q_lo_opt.zero_grad(set_to_none=True)
            q_loss.backward()
            self.q_lo_opt.step()
            polyak_update(self.q_lo_target, self.q_lo, oc.tau)
            with torch.no_grad():
                self.q_scale.lerp_(q.abs().mean().float(), 0.005)
            metrics["spaars_supe/q_lo_loss"] = q_loss.detach()
        raw = self.raw_policy.mean_action(steps["obs"])
        bc = (raw - anchor).pow(2).sum(-1).mean()
        if self.phase == "gated":  # TD3+BC anchored to the decoder's action (methods.md 6.5)
            q_raw = self.q_lo(steps["obs"], raw).mean(0)
            raw_loss = -oc.alpha_bc / q_raw.abs().mean().detach().clamp_min(1e-6) * q_raw.mean() + bc
        else:
            raw_loss = bc if oc.concurrent_bc else None
        if raw_loss is not None:
            self.raw_opt.zero_grad(set_to_none=True)
            raw_loss.backward(inputs=list(self.raw_policy.parameters()))
            self.raw_opt.step()
        metrics["spaars_supe/raw_bc_error"] = bc.detach()
        return metrics

    # -- phase transition --------------------------------------------------------------------------
    @torch.no_grad()
    def after_eval(self, step: int, record: dict, recent_obs: torch.Tensor) -> dict:
        """SPAARS's signals on recently visited states, with the decoder's action of the policy's skill as the
        latent action; the switch when the transition monitor says so."""
        u = self.actor.mean_action(recent_obs)
        skill = skill_from_action(self.skills, self.cfg.skill_space, u, recent_obs)
        latent = self.skills.decode_mean(recent_obs, skill)
        raw = self.raw_policy.mean_action(recent_obs)
        advantage = member_advantages(self.q_lo, recent_obs, raw, latent)
        self.adv_scale.fill_(float(advantage.mean(0).abs().mean()) + 1e-8)
        gate_rate = float(self.gate.batch_open(lcb_of(advantage, self.online_cfg.gate.kappa), self.gate_scale())
                          .float().mean())
        signals = {"novelty": float(self.rnd.novelty(torch.cat([recent_obs, u], -1)).mean()),
                   "bc_error": float((raw - latent).pow(2).sum(-1).mean()), "gate_rate_recent": gate_rate,
                   "q_scale": float(self.q_scale), "adv_scale": float(self.adv_scale),
                   "adv_mean": float(advantage.mean(0).mean())}
        if self.phase == "latent":
            entry = self.transition.check(step, record["return_mean"], signals)
            if entry is not None:
                self.phase = "gated"
                self.switch_log.append(entry)
        return signals

    def run_summary(self) -> dict:
        return {"switch": list(self.switch_log), "transition": self.transition.config.model_dump(mode="json")}

    # -- checkpoint --------------------------------------------------------------------------------
    def _modules(self) -> dict:
        return {**super()._modules(), "q_lo": self.q_lo, "q_lo_target": self.q_lo_target, "raw_policy": self.raw_policy,
                "q_lo_opt": self.q_lo_opt, "raw_opt": self.raw_opt}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "q_scale": self.q_scale.clone(), "adv_scale": self.adv_scale.clone(),
                "gate_open": self.gate.is_open, "transition": self.transition.state_dict(),
                "switch_log": list(self.switch_log)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.q_scale.copy_(state["q_scale"])
            self.adv_scale.copy_(state["adv_scale"])
        self.gate.is_open = state["gate_open"]
        self.transition.load_state_dict(state["transition"])
        self.switch_log = list(state["switch_log"])
