"""SPAARS: latent-space exploration, then gated hand-over to a raw-action policy (methods.md section 6).

Phases
  latent  the latent policy z ~ pi_z(s) explores inside the CVAE's action manifold; a = D(s, z) with the
          decoder frozen. The shared critic over raw actions learns from 50/50 offline/online batches;
          the latent policy is trained SAC-style through the decoder; the raw policy is behaviour-cloned
          concurrently onto D(s, mean z(s)) (Theory 3: this is what makes the hand-over smooth); an RND
          model tracks how novel visited states still are.
  gated   at each state the advantage gate (algos/gate.py) executes the raw action only where the critic
          ensemble's lower confidence bound says it beats the decoded latent action; the raw policy
          improves against the critic in TD3+BC form, anchored to the latent behaviour; the latent
          policy keeps training as the fallback.
The switch happens when TransitionMonitor (algos/transition.py) sees a plateau and a calibrated raw policy.

Baselines through this same class (same networks, data, updates and evaluation):
  latent  never switches (PLAS-style online fine-tuning in the latent space),
  raw     starts in the gated phase with the gate forced open (raw fine-tuning from the start),
and the ablations `concurrent_bc=False` and `hard_switch=True` (force the gate open after the switch).
With `online.raw_form=latent_residual` the raw policy is the latent controller plus a bounded residual
(algos/latent_residual.py), trained by the same losses. With `online.raw_init=spar` the raw policy is SPAR's rectified policy (algos/spar.py: a frozen BC anchor plus a
bounded residual), and it improves by Latent Self-Imitation in both phases instead of concurrent BC / TD3+BC.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

from spaars_robot.algos.base import fused_adam, polyak_update
from spaars_robot.algos.gate import AdvantageGate, choose_scale, gate_lcb, lcb_of, member_advantages
from spaars_robot.algos.latch import SUPPORT_HYSTERESIS_REL, Hold, Latch, monitor_support
from spaars_robot.algos.latent_residual import LatentResidualPolicy
from spaars_robot.algos.offline import OfflineNets
from spaars_robot.algos.rollout_gate import gate_features
from spaars_robot.algos.spar import RectifiedPolicy, lsi_loss
from spaars_robot.algos.transition import TransitionMonitor
from spaars_robot.config.training import TrainConfig
from spaars_robot.nn.critics import QEnsemble
from spaars_robot.nn.device import set_generator_state
from spaars_robot.nn.neighbour_gate import NeighbourGate
from spaars_robot.nn.rnd import RND

HELD_OUT_SEED_OFFSET = 104_729  # the held-out gate critic's weights and subset draws: a stream of their own


class SPAARSAgent:
    def __init__(self, nets: OfflineNets, config: TrainConfig, generator: torch.Generator,
                 rectified: RectifiedPolicy | None = None) -> None:
        self.nets, self.config, self.cfg = nets, config, config.online
        self.generator = generator
        # online.raw_init=spar: the raw policy is SPAR's rectified policy (anchor + bounded residual), improved by
        # Latent Self-Imitation in both phases; otherwise the pretraining's AWR policy, as the paper builds it
        self.rectified = rectified
        # online.raw_form=latent_residual: the raw controller is the latent one plus a bounded residual
        # (algos/latent_residual.py); its residual is the only raw parameter set, trained by the same TD3+BC loss
        # or, with raw_residual_objective=q, by the normalised Q alone inside its bound
        self.latent_residual = (LatentResidualPolicy(nets.latent_policy, nets.cvae, nets.obs_dim, nets.action_dim,
                                                     self.cfg.hidden, self.cfg.raw_residual_bound).to(nets.device)
                                if self.cfg.raw_form == "latent_residual" else None)
        self.raw_policy = (rectified if rectified is not None else
                           self.latent_residual if self.latent_residual is not None else nets.raw_policy)
        self.residual_q_only = self.latent_residual is not None and self.cfg.raw_residual_objective == "q"
        self.variant = config.algo  # spaars | latent | raw
        self.critic_target = copy.deepcopy(nets.critic).requires_grad_(False)
        gate_cfg = self.cfg.gate
        self.gate = AdvantageGate(gate_cfg.tau_rel, gate_cfg.hysteresis_rel)
        self.eval_gate = AdvantageGate(gate_cfg.tau_rel, gate_cfg.hysteresis_rel)
        self.transition = TransitionMonitor(self.cfg.transition)
        self.phase = "gated" if self.variant == "raw" else "latent"
        self.force_raw = self.variant == "raw"
        k = nets.latent_dim
        device = nets.device  # the run's device (`train --device`): everything this agent creates goes there
        self.log_alpha = torch.tensor(math.log(self.cfg.init_temperature), device=device, requires_grad=True)
        self.target_entropy = -k / 2.0
        self.rnd = RND(nets.normalizer.mean.numel(), self.cfg.hidden, self.cfg.rnd_feature_dim).to(device)
        lr = self.cfg.lr
        self.critic_opt = fused_adam(nets.critic.parameters(), lr)
        self.latent_params = list(nets.latent_policy.parameters())
        self.raw_params = (self.raw_policy.residual_parameters() if rectified is not None
                           or self.latent_residual is not None else list(nets.raw_policy.parameters()))
        self.latent_opt = fused_adam(self.latent_params, lr)
        self.raw_opt = fused_adam(self.raw_params, lr)
        self.alpha_opt = fused_adam([self.log_alpha], lr)
        self.rnd_opt = fused_adam(self.rnd.predictor.parameters(), lr)
        self.q_scale = nets.q_scale.clone()
        self.adv_scale = torch.tensor(1.0, device=device)  # mean |A| on recent states; set by every after_eval
        self.switch_log: list[dict] = []
        # a gate fitted to branched rollouts after training (`spaars-robot gate fit`, algos/rollout_gate.py): when set,
        # it decides where the critic's LCB did; it is a run artifact (rollout_gate.pt), not part of the checkpoint
        self.rollout_gate: NeighbourGate | None = None
        # its decision is held for `rollout_hold.steps` steps (`gate fit --hold-steps`): what a lead measured
        self.rollout_hold = Hold()
        # online.support_monitor: the runtime's veto of out-of-support raw actions, one latch per trajectory kind
        # like the gate's (its threshold is read when it decides: the pretraining sets it after construction)
        self.support_latch, self.eval_support_latch = Latch(math.inf, 0.0), Latch(math.inf, 0.0)
        # gate.critic=held_out: the gate's own ensemble (see GateConfig.critic), fresh weights from a stream of its
        # own so that every other network, and the run up to the switch, is bit for bit the shared-gate run's
        self.held_out: QEnsemble | None = None
        if gate_cfg.critic == "held_out":
            pre = config.pretrain
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed + HELD_OUT_SEED_OFFSET)
                self.held_out = QEnsemble(nets.obs_dim, nets.action_dim, pre.hidden, pre.ensemble_size,
                                          pre.layer_norm).to(device)
            self.held_out_target = copy.deepcopy(self.held_out).requires_grad_(False)
            self.held_out_opt = fused_adam(self.held_out.parameters(), lr)
            self.held_out_generator = torch.Generator(device=device).manual_seed(config.seed + HELD_OUT_SEED_OFFSET)

    @property
    def gate_critic(self) -> QEnsemble:
        """The critic whose advantages the gate reads (GateConfig.critic); export and the diagnostic use it too."""
        return self.held_out if self.held_out is not None else self.nets.critic

    def gate_scale(self) -> torch.Tensor:
        """What the gate's relative thresholds multiply (GateConfig.scale)."""
        return choose_scale(self.cfg.gate.scale, self.q_scale, self.adv_scale)

    # -- acting ------------------------------------------------------------------------------------
    def _s(self, obs: np.ndarray) -> torch.Tensor:
        return self.nets.normalizer(torch.as_tensor(obs, dtype=torch.float32, device=self.nets.device).unsqueeze(0))

    def begin_episode(self, evaluation: bool = False) -> None:
        """Gate hysteresis is per trajectory; evaluation episodes have their own gate state."""
        (self.eval_gate if evaluation else self.gate).reset()
        (self.eval_support_latch if evaluation else self.support_latch).reset()
        self.rollout_hold.reset()

    @torch.no_grad()
    def _gated_choice(self, s: torch.Tensor, gate: AdvantageGate) -> tuple[bool, torch.Tensor, torch.Tensor]:
        raw = self.raw_policy.mean_action(s)
        lat = self.nets.decoded_latent_mean(s)
        if self.force_raw:
            return True, raw, lat
        if self.rollout_gate is not None:  # no hysteresis: it predicts the difference itself, not a noisy bound
            gate = self.rollout_gate
            return self.rollout_hold.next(lambda: bool(gate(gate_features(s, raw, lat))[0] > 0)), raw, lat
        lcb = float(gate_lcb(self.gate_critic, s, raw, lat, self.cfg.gate.kappa)[0])
        return gate.decide(lcb, float(self.gate_scale())), raw, lat

    def _out_of_support(self, s: torch.Tensor, action: torch.Tensor, latch: Latch) -> bool:
        """The runtime's support monitor (runtime/decision.py) on the raw action about to be sent; False when off.

        Updated only where the gate chose raw, as the server's monitor only matters there."""
        if not self.cfg.support_monitor:
            return False
        threshold = float(self.nets.support_threshold)
        latch.threshold, latch.hysteresis = threshold, SUPPORT_HYSTERESIS_REL * abs(threshold)
        return monitor_support(latch, float(self.nets.cvae.support_score(s, action)[0]))

    @torch.no_grad()
    def explore(self, obs: np.ndarray) -> tuple[np.ndarray, str]:
        """Behaviour action for training: stochastic latent, or gated raw with Gaussian noise (with
        `support_monitor`, vetoed back to the latent sample where that noisy action is out of support)."""
        s = self._s(obs)
        source = "latent"
        if self.phase == "gated":
            use_raw, raw, _ = self._gated_choice(s, self.gate)
            if use_raw:
                noise = torch.randn(raw.shape, generator=self.generator, device=raw.device)
                noisy = (raw + noise * self.cfg.raw_explore_noise).clamp(-1.0, 1.0)
                if not self._out_of_support(s, noisy, self.support_latch):
                    return noisy[0].cpu().numpy(), "raw"
                source = "fallback"
        z = self.nets.latent_policy.sample(s, self.generator)[0]
        return self.nets.cvae.decode(s, z)[0].cpu().numpy(), source

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> tuple[np.ndarray, str]:
        """Deterministic deployed policy: gated choice between mu_raw(s) and D(s, mean z(s)), and with
        `support_monitor` the server's veto of an out-of-support raw action."""
        s = self._s(obs)
        if self.phase == "gated":
            use_raw, raw, lat = self._gated_choice(s, self.eval_gate)
            if use_raw and self._out_of_support(s, raw, self.eval_support_latch):
                return lat[0].cpu().numpy(), "fallback"
            return (raw if use_raw else lat)[0].cpu().numpy(), "raw" if use_raw else "latent"
        return self.nets.decoded_latent_mean(s)[0].cpu().numpy(), "latent"

    @torch.no_grad()
    def controller_action(self, obs: np.ndarray, name: str) -> np.ndarray:
        """One controller's deterministic action, whatever the gate would choose: mu_raw(s) ("raw") or
        D(s, mean z(s)) ("latent"). For measuring the gate's decision (train/branching.py), never for acting."""
        s = self._s(obs)
        if name == "raw":
            return self.raw_policy.mean_action(s)[0].cpu().numpy()
        if name == "latent":
            return self.nets.decoded_latent_mean(s)[0].cpu().numpy()
        raise ValueError(f"controller {name!r}: raw or latent")

    # -- learning ----------------------------------------------------------------------------------
    def _next_action(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Critic target action at s': the latent controller's (a decoded sample, or with `critic_target_action:
        mean` the decoded mean it deploys) or, once gated, the raw mean where the gate's entry test passes
        (`gated_target: entry`) or everywhere (`gated_target: raw`).

        Why `mean` exists: the gate ranks the deployed raw action against the deployed latent action, but with
        sampled targets the critic values a continuation that explores; if that noise blurs what one action does,
        the critic's advantages come out smaller than the deployed policy's (3-9x on the issue-16 runs) and the
        gate's ranking is the casualty."""
        if self.cfg.critic_target_action == "mean":
            latent = self.nets.decoded_latent_mean(next_obs)
        else:
            z = self.nets.latent_policy.sample(next_obs, self.generator)[0]
            latent = self.nets.cvae.decode(next_obs, z)
        if self.phase == "latent":
            return latent
        raw = self.raw_policy.mean_action(next_obs)
        if self.force_raw or self.cfg.gated_target == "raw":
            # raw: the latched gate executes raw on ~99 % of post-switch steps, so the continuation worth valuing is
            # raw's; the per-state entry test would value a mostly latent one (docs/spaars.md, `online.gated_target`)
            return raw
        lcb = gate_lcb(self.gate_critic, next_obs, raw, self.nets.decoded_latent_mean(next_obs), self.cfg.gate.kappa)
        return torch.where(self.gate.batch_open(lcb, self.gate_scale()).unsqueeze(-1), raw, latent)

    @torch.no_grad()
    def td_backup(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """(reward, discount, s', a') of the TD target: what every critic fitted to it shares."""
        if "nstep_reward" in batch:  # online.critic_nstep > 1: data/replay.nstep_targets
            reward, next_obs = batch["nstep_reward"], batch["nstep_next_obs"]
            discount = batch["nstep_discount"] * (1.0 - batch["nstep_done"])
        else:
            reward, next_obs = batch["reward"], batch["next_obs"]
            discount = self.cfg.gamma * (1.0 - batch["done"])
        return reward, discount, next_obs, self._next_action(next_obs)

    def critic_td_loss(self, critic: QEnsemble, target: QEnsemble, batch: dict[str, torch.Tensor],
                       subset: int | None, generator: torch.Generator,
                       backup: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The shared critic's TD loss (no entropy backup; SUPE/RLPD) and its Q values, for any (critic, target)
        pair: the run fits its own with it (and the held-out gate critic, on the same `backup`), and
        benchmarks/gate_accuracy.py fits fresh ensembles of other sizes with exactly the same target, so a
        difference in ranking comes from the ensemble and not a second copy."""
        reward, discount, next_obs, next_action = self.td_backup(batch) if backup is None else backup
        with torch.no_grad():
            y = reward + discount * target.target_min(next_obs, next_action, subset, generator)
        q = critic(batch["obs"], batch["action"])
        return (q - y).pow(2).mean(1).sum(), q

    def _td_step(self, critic: QEnsemble, target: QEnsemble, opt: torch.optim.Optimizer, generator: torch.Generator,
                 batch: dict[str, torch.Tensor], backup: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """One TD step of a critic on the shared backup, then its Polyak target: (loss, Q values)."""
        loss, q = self.critic_td_loss(critic, target, batch, self.cfg.target_subset, generator, backup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        polyak_update(target, critic, self.cfg.tau)
        return loss, q

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        nets, cfg = self.nets, self.cfg
        obs = batch["obs"]
        # 1. shared critic over raw actions (and the held-out gate critic on the same targets' s', a')
        backup = self.td_backup(batch)
        critic_loss, q = self._td_step(nets.critic, self.critic_target, self.critic_opt, self.generator, batch,
                                       backup)
        with torch.no_grad():
            self.q_scale.lerp_(q.abs().mean().float(), 0.005)  # float: q is bf16 under autocast
        metrics = {}
        if self.held_out is not None:
            held_loss, _ = self._td_step(self.held_out, self.held_out_target, self.held_out_opt,
                                         self.held_out_generator, batch, backup)
            metrics["online/gate_critic_loss"] = held_loss.detach()

        # 2. latent actor, SAC through the frozen decoder, and its temperature
        alpha = self.log_alpha.exp().detach()
        z, logp, z_mean = nets.latent_policy.sample(obs, self.generator)
        latent_q = nets.critic(obs, nets.cvae.decode(obs, z)).mean(0)
        latent_loss = (alpha * logp - latent_q).mean()
        self.latent_opt.zero_grad(set_to_none=True)
        latent_loss.backward(inputs=self.latent_params)
        self.latent_opt.step()
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()

        # 3. raw policy: concurrent BC (latent phase; `latent_phase_raw: td3bc` also there) or TD3+BC anchored to
        #    the latent behaviour (gated)
        metrics.update({"online/critic_loss": critic_loss.detach(), "online/q": q.mean().detach(),
                        "online/latent_loss": latent_loss.detach(), "online/alpha": alpha})
        with torch.no_grad():
            # latent_residual: the anchor is the latent controller as it is now (after this update's latent step),
            # so the BC term is the residual itself and stays exactly zero at zero; the one-step-old decoded mean
            # would make the residual chase the latent policy's last step
            anchor = (self.latent_residual.anchor_action(obs) if self.latent_residual is not None
                      else nets.cvae.decode(obs, z_mean.detach()))
        with torch.set_grad_enabled(self.rectified is None):  # rectified: bc is a metric only, no graph needed
            raw = (self.latent_residual.action_from(obs, anchor) if self.latent_residual is not None
                   else self.raw_policy.mean_action(obs))
        bc = (raw - anchor).pow(2).sum(-1).mean()
        if self.rectified is not None:
            raw_loss, lsi_metrics = lsi_loss(self.rectified, nets.cvae, nets.critic, obs, self.config.spar,
                                             self.generator)
            metrics.update(lsi_metrics)
        elif self.phase == "gated" or cfg.latent_phase_raw == "td3bc":
            q_raw = nets.critic(obs, raw).mean(0)
            lam = cfg.alpha_bc / q_raw.abs().mean().detach().clamp_min(1e-6)
            # raw_residual_objective=q: the residual's bound is its trust region (BCQ / PLAS perturbation), so
            # no BC term; in the latent phase (latent_phase_raw=bc) concurrent BC holds the residual at zero
            raw_loss = -lam * q_raw.mean() + (0.0 if self.residual_q_only else bc)
        elif cfg.concurrent_bc:
            raw_loss = bc
        else:
            raw_loss = None
        if raw_loss is not None:
            self.raw_opt.zero_grad(set_to_none=True)
            raw_loss.backward(inputs=self.raw_params)
            self.raw_opt.step()
        metrics["online/raw_bc_error"] = bc.detach()

        # 4. RND predictor on the online part of the batch
        online_obs = obs[batch["online_from"]:] if "online_from" in batch else obs
        if online_obs.shape[0] > 0:
            rnd_loss = self.rnd.novelty(online_obs).mean()
            self.rnd_opt.zero_grad(set_to_none=True)
            rnd_loss.backward()
            self.rnd_opt.step()
            metrics["online/rnd"] = rnd_loss.detach()
        return metrics

    # -- phase transition --------------------------------------------------------------------------
    @torch.no_grad()
    def after_eval(self, step: int, record: dict, recent_obs: torch.Tensor) -> dict:
        """Compute the transition signals on recently visited states and switch phase if they say so."""
        nets = self.nets
        raw = self.raw_policy.mean_action(recent_obs)
        lat = nets.decoded_latent_mean(recent_obs)
        bc_error = float((raw - lat).pow(2).sum(-1).mean())
        novelty = float(self.rnd.novelty(recent_obs).mean())
        advantage = member_advantages(self.gate_critic, recent_obs, raw, lat)
        lcb = lcb_of(advantage, self.cfg.gate.kappa)
        self.adv_scale.fill_(float(advantage.mean(0).abs().mean()) + 1e-8)
        gate_rate = float(self.gate.batch_open(lcb, self.gate_scale()).float().mean())
        # adv_mean: the signed mean advantage of raw over latent on recent states (the paper's figure 2), where
        # adv_scale is its unsigned magnitude (what an advantage-scaled gate divides by)
        signals = {"novelty": novelty, "bc_error": bc_error, "gate_rate_recent": gate_rate,
                   "q_scale": float(self.q_scale), "adv_scale": float(self.adv_scale),
                   "adv_mean": float(advantage.mean(0).mean())}
        if self.phase == "latent" and self.variant == "spaars":
            entry = self.transition.check(step, record["return_mean"], signals)
            if entry is not None:
                self.phase = "gated"
                self.force_raw = self.cfg.hard_switch
                self.switch_log.append(entry)
        return signals

    def run_summary(self) -> dict:
        # the transition settings beside the switch log: with the curve's signals they let `transition replay`
        # re-decide the switch from the summary alone; a latent-only run's checks are SPAARS's latent phase continued
        return {"switch": list(self.switch_log),
                **({"transition": self.transition.config.model_dump(mode="json")} if self.variant != "raw" else {})}

    # -- checkpoint --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "nets": self.nets.state_dict(), "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(), "rnd": self.rnd.state_dict(),
            "critic_opt": self.critic_opt.state_dict(), "latent_opt": self.latent_opt.state_dict(),
            "raw_opt": self.raw_opt.state_dict(), "alpha_opt": self.alpha_opt.state_dict(),
            "rnd_opt": self.rnd_opt.state_dict(), "q_scale": self.q_scale.clone(),
            "adv_scale": self.adv_scale.clone(),
            "phase": self.phase, "force_raw": self.force_raw, "gate_open": self.gate.is_open,
            "support_latch_on": self.support_latch.on,
            "transition": self.transition.state_dict(), "switch_log": list(self.switch_log),
            **({"spar": self.rectified.state_dict()} if self.rectified is not None else {}),
            **({"raw_residual": self.latent_residual.residual_state_dict()}
               if self.latent_residual is not None else {}),
            **({"gate_critic": self.held_out.state_dict(), "gate_critic_target": self.held_out_target.state_dict(),
                "gate_critic_opt": self.held_out_opt.state_dict(),
                "gate_critic_generator": self.held_out_generator.get_state()} if self.held_out is not None else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        self.nets.load_state_dict(state["nets"])
        if self.rectified is not None:
            self.rectified.load_state_dict(state["spar"])
        if self.latent_residual is not None:
            self.latent_residual.load_residual_state_dict(state["raw_residual"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
            self.q_scale.copy_(state["q_scale"])
            self.adv_scale.copy_(state.get("adv_scale", torch.tensor(1.0)))  # absent in runs before gate.scale
        self.rnd.load_state_dict(state["rnd"])
        for name in ("critic_opt", "latent_opt", "raw_opt", "alpha_opt", "rnd_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.phase, self.force_raw, self.gate.is_open = state["phase"], state["force_raw"], state["gate_open"]
        self.support_latch.on = bool(state.get("support_latch_on", False))  # absent before online.support_monitor
        self.transition.load_state_dict(state["transition"])
        self.switch_log = list(state["switch_log"])
        if self.held_out is not None:
            self.held_out.load_state_dict(state["gate_critic"])
            self.held_out_target.load_state_dict(state["gate_critic_target"])
            self.held_out_opt.load_state_dict(state["gate_critic_opt"])
            set_generator_state(self.held_out_generator, state["gate_critic_generator"])
