"""The deployable policy as one torch module: exactly what the onboard runtime evaluates.

forward(obs [B, obs_dim], raw observation) ->
    raw_action     [B, act_dim]  deterministic raw policy  mu_raw(s) (spar/bc runs: the rectified policy
                                 pi_base(s) + bounded residual, algos/spar.py; online.raw_form=latent_residual:
                                 the latent action + bounded residual, algos/latent_residual.py)
    latent_action  [B, act_dim]  decoded latent policy      D(s, z_max * tanh(mu_z(s)))
    gate_advantage [B]           lower confidence bound of Q(s, a_raw) - Q(s, a_lat) over the ensemble,
                                 in units of the gate's scale (`gate_scale`: the running mean |Q|, or
                                 the mean |A| on recent states, per GateConfig.scale): the gate's
                                 thresholds are relative (tau_rel, hysteresis_rel), and Q values of
                                 order 100 would otherwise leave float32 ONNX-vs-torch parity at ~1e-4
                                 With a rollout gate (`export --gate rollout`, algos/rollout_gate.py) it is
                                 instead that gate's predicted H-step return difference of raw over latent, in
                                 units of the fitted differences' sd, and the thresholds are 0
    support_score  [B]           CVAE support score of the raw action (higher = further from the data)

Observation normalisation is inside, so the exported graph takes what the robot measures. The gate
threshold/hysteresis and the support threshold are stateful decisions made by the runtime per client;
the graph only provides the numbers they compare.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from spaars_robot.algos.gate import gate_lcb
from spaars_robot.algos.latent_residual import LatentResidualPolicy
from spaars_robot.algos.rollout_gate import gate_features
from spaars_robot.algos.spar import RectifiedPolicy
from spaars_robot.algos.supe import SQUASH_EPS, skill_from_action
from spaars_robot.export.manifest import (  # noqa: F401 (SupportCalibration re-exported)
    CHOOSE_INPUT,
    OUTPUT_NAMES,
    SKILL_INPUT,
    SKILL_OUTPUT,
    Controller,
    SupportCalibration,
)
from spaars_robot.export.skill_clock import SkillClock
from spaars_robot.nn.critics import QEnsemble
from spaars_robot.nn.cvae import CVAE
from spaars_robot.nn.neighbour_gate import NeighbourGate
from spaars_robot.nn.normalizer import ObsNormalizer
from spaars_robot.nn.policies import TanhGaussianPolicy
from spaars_robot.nn.skills import SkillVAE


class PolicyStack(nn.Module):
    input_names: tuple[str, ...] = ("obs",)
    output_names: tuple[str, ...] = OUTPUT_NAMES

    def __init__(self, normalizer: ObsNormalizer,
                 raw_policy: TanhGaussianPolicy | RectifiedPolicy | LatentResidualPolicy,
                 latent_policy: TanhGaussianPolicy,
                 cvae: CVAE, critic: QEnsemble, gate_kappa: float, gate_scale: float = 1.0,
                 state_gate: NeighbourGate | None = None) -> None:
        super().__init__()
        self.register_buffer("gate_scale", torch.tensor(float(gate_scale)))
        self.normalizer, self.raw_policy, self.latent_policy = normalizer, raw_policy, latent_policy
        self.cvae, self.critic = cvae, critic
        self.gate_kappa = gate_kappa
        self.state_gate = state_gate

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.normalizer(obs)
        raw_action = self.raw_policy.mean_action(s)
        latent_action = self.cvae.decode(s, self.latent_policy.mean_action(s))
        if self.state_gate is not None:
            gate_advantage = self.state_gate(gate_features(s, raw_action, latent_action)) / self.gate_scale
        else:
            gate_advantage = gate_lcb(self.critic, s, raw_action, latent_action, self.gate_kappa) / self.gate_scale
        support_score = self.cvae.support_score(s, raw_action)
        return raw_action, latent_action, gate_advantage, support_score

    def example_inputs(self, obs: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """The graph's inputs for these observations (export traces them, parity feeds them to both sides)."""
        return (obs,)


SKILL_LIMIT = math.atanh(1 - SQUASH_EPS)


def exportable_skill_of(pre_tanh_mean: torch.Tensor) -> torch.Tensor:
    """algos.supe.skill_of(tanh(mu)) = atanh(clamp(tanh(mu), 1 - eps)), computed as clamp(mu, atanh(1 - eps)).

    The same map, written without atanh, which the ONNX exporter lacks, and without its ill-conditioning: near a
    saturated skill d atanh(u)/du ~ 1/eps, so float32 rounding of tanh(mu) became 5e-3 of skill difference between
    onnxruntime and torch on a trained kitchen run and failed parity; clamping the pre-tanh mean is exact."""
    return pre_tanh_mean.clamp(-SKILL_LIMIT, SKILL_LIMIT)


class SkillPolicyStack(nn.Module):
    """SUPE / SPAARS-SUPE as one graph: forward(obs, skill [B, k], choose_skill [B]) -> the four outputs + skill_out.

    Where `choose_skill` is 1 the high-level policy's mean skill at s replaces the one given (SUPE's evaluation
    policy: a new skill every H steps, decided by the runtime's per-client clock); `latent_action` is the skill
    decoder's mean action under the skill in force, `raw_action` the per-step raw policy, `gate_advantage` the LCB
    of Q_lo(s, raw) - Q_lo(s, latent) over the per-step critic (SPAARS-SUPE's gate), `support_score` the dataset
    CVAE's score of the raw action. A SUPE run has no raw learner: its bundle deploys the latent controller alone
    (GateSpec.controller).
    """

    input_names: tuple[str, ...] = ("obs", SKILL_INPUT, CHOOSE_INPUT)
    output_names: tuple[str, ...] = (*OUTPUT_NAMES, SKILL_OUTPUT)

    def __init__(self, normalizer: ObsNormalizer, raw_policy: TanhGaussianPolicy, high_policy: TanhGaussianPolicy,
                 skills: SkillVAE, cvae: CVAE, critic: QEnsemble, gate_kappa: float, gate_scale: float = 1.0,
                 skill_space: str = "tanh") -> None:
        super().__init__()
        self.skill_space = skill_space  # supe.skill_space of the run: what the high level's action means
        self.register_buffer("gate_scale", torch.tensor(float(gate_scale)))
        self.normalizer, self.raw_policy, self.high_policy = normalizer, raw_policy, high_policy
        self.skills, self.cvae, self.critic = skills, cvae, critic
        self.gate_kappa = gate_kappa

    @property
    def skill_dim(self) -> int:
        return self.skills.skill_dim

    def forward(self, obs: torch.Tensor, skill: torch.Tensor, choose: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.normalizer(obs)
        chosen = exportable_skill_of(self.high_policy.pre_tanh_mean(s))
        if self.skill_space == "prior":  # skill_from_action's prior space, in the same exportable form
            mean, std = self.skills.prior_dist(s)
            chosen = mean + std * chosen
        z = torch.where(choose.unsqueeze(-1) > 0.5, chosen, skill)
        latent_action = self.skills.decode_mean(s, z)
        raw_action = self.raw_policy.mean_action(s)
        gate_advantage = gate_lcb(self.critic, s, raw_action, latent_action, self.gate_kappa) / self.gate_scale
        support_score = self.cvae.support_score(s, raw_action)
        return raw_action, latent_action, gate_advantage, support_score, z

    def example_inputs(self, obs: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Skills spread like the high level's (atanh of uniform squashed skills) and every other row choosing."""
        n = obs.shape[0]
        u = torch.rand(n, self.skill_dim, generator=generator) * 1.9 - 0.95
        choose = (torch.arange(n) % 2).to(torch.float32)
        return obs, skill_from_action(self.skills, self.skill_space, u, self.normalizer(obs)), choose


def stack_outputs(stack: PolicyStack | SkillPolicyStack, obs: np.ndarray, clock: SkillClock | None
                  ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The stack in torch on one observation, as the runtime's PolicyRunner calls the exported graph (the
    in-process reference of `sim --in-process` and of rendering from a checkpoint)."""
    with torch.no_grad():
        obs_t = torch.as_tensor(obs, dtype=torch.float32)[None]
        if isinstance(stack, SkillPolicyStack):
            if clock is None:
                raise ValueError("a skill stack needs the client's SkillClock")
            skill = torch.as_tensor(clock.skill)[None]
            choose = torch.tensor([1.0 if clock.due else 0.0])
            raw, latent, advantage, score, used = stack(obs_t, skill, choose)
            clock.advance(used[0].numpy())
        else:
            raw, latent, advantage, score = stack(obs_t)
    return raw[0].numpy(), latent[0].numpy(), float(advantage[0]), float(score[0])


def random_skill_stack(obs_dim: int, action_dim: int, skill_dim: int = 3, horizon: int = 4, seed: int = 0,
                       hidden: tuple[int, ...] = (64, 64), skill_space: str = "tanh") -> SkillPolicyStack:
    """An untrained skill stack with the real architecture; for tests of export and serving."""
    torch.manual_seed(seed)
    return SkillPolicyStack(
        ObsNormalizer(torch.randn(obs_dim) * 0.1, torch.rand(obs_dim) + 0.5),
        TanhGaussianPolicy(obs_dim, action_dim, hidden), TanhGaussianPolicy(obs_dim, skill_dim, hidden),
        SkillVAE(obs_dim, action_dim, skill_dim, horizon, hidden, gru_hidden=16, gru_layers=1, kl_weight=0.1),
        CVAE(obs_dim, action_dim, 2 * action_dim, hidden),
        QEnsemble(obs_dim, action_dim, hidden, 2, layer_norm=True), gate_kappa=1.0, skill_space=skill_space,
    ).eval()


def random_stack(obs_dim: int, action_dim: int, seed: int = 0, hidden: tuple[int, ...] = (64, 64),
                 latent_dim: int | None = None, ensemble_size: int = 2) -> PolicyStack:
    """An untrained stack with the real architecture; for tests of export and serving."""
    torch.manual_seed(seed)
    k = latent_dim or 2 * action_dim
    return PolicyStack(
        ObsNormalizer(torch.randn(obs_dim) * 0.1, torch.rand(obs_dim) + 0.5),
        TanhGaussianPolicy(obs_dim, action_dim, hidden),
        TanhGaussianPolicy(obs_dim, k, hidden, bound=2.0),
        CVAE(obs_dim, action_dim, k, hidden),
        QEnsemble(obs_dim, action_dim, hidden, ensemble_size, layer_norm=True),
        gate_kappa=1.0,
    ).eval()


class RunExportInfo(BaseModel):
    """Everything export needs to know about a training run besides its networks (see `load_run_for_export`)."""

    task: str
    obs_dim: int
    action_dim: int
    control_rate_hz: float
    gate_threshold: float  # tau, in units of the gate scale: raw action allowed when gate_advantage > tau
    gate_hysteresis: float  # once raw, stay raw while gate_advantage > tau - hysteresis
    support_threshold: float  # support_score above this = raw action out of data support
    support_calibration: SupportCalibration
    run_dir: str
    algo: str
    seed: int
    train_command: str
    config: dict
    calibration_obs: list[list[float]] = []  # recorded dataset observations for parity checks
    controller: Controller = "gated"  # what the run's evaluation executed (manifest GateSpec.controller)
    gate_form: str = "critic_lcb"  # or "rollout_neighbours": the run's fitted rollout gate (export --gate rollout)
    gate_fit: dict | None = None  # the rollout gate's fit record (states, k, cross-validated sign accuracy)
    gate_hold_steps: int = 1  # a rollout gate fitted with --hold-steps: decide every N steps, hold in between
    skill_horizon: int | None = None  # skill policies: steps a chosen skill is held
