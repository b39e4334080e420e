"""The deployable policy as one torch module: exactly what the onboard runtime evaluates.

forward(obs [B, obs_dim], raw observation) ->
    raw_action     [B, act_dim]  deterministic raw policy  mu_raw(s) (spar/bc runs: the rectified policy
                                 pi_base(s) + bounded residual, algos/spar.py)
    latent_action  [B, act_dim]  decoded latent policy      D(s, z_max * tanh(mu_z(s)))
    gate_advantage [B]           lower confidence bound of Q(s, a_raw) - Q(s, a_lat) over the ensemble,
                                 in units of the gate's scale (`gate_scale`: the running mean |Q|, or
                                 the mean |A| on recent states, per GateConfig.scale): the gate's
                                 thresholds are relative (tau_rel, hysteresis_rel), and Q values of
                                 order 100 would otherwise leave float32 ONNX-vs-torch parity at ~1e-4
    support_score  [B]           CVAE support score of the raw action (higher = further from the data)

Observation normalisation is inside, so the exported graph takes what the robot measures. The gate
threshold/hysteresis and the support threshold are stateful decisions made by the runtime per client;
the graph only provides the numbers they compare.
"""
from __future__ import annotations

import torch
from pydantic import BaseModel
from torch import nn

from spaars_robot.algos.gate import gate_lcb
from spaars_robot.algos.spar import RectifiedPolicy
from spaars_robot.export.manifest import OUTPUT_NAMES, SupportCalibration  # noqa: F401 (re-exported)
from spaars_robot.nn.critics import QEnsemble
from spaars_robot.nn.cvae import CVAE
from spaars_robot.nn.normalizer import ObsNormalizer
from spaars_robot.nn.policies import TanhGaussianPolicy


class PolicyStack(nn.Module):
    def __init__(self, normalizer: ObsNormalizer, raw_policy: TanhGaussianPolicy | RectifiedPolicy,
                 latent_policy: TanhGaussianPolicy,
                 cvae: CVAE, critic: QEnsemble, gate_kappa: float, gate_scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("gate_scale", torch.tensor(float(gate_scale)))
        self.normalizer, self.raw_policy, self.latent_policy = normalizer, raw_policy, latent_policy
        self.cvae, self.critic = cvae, critic
        self.gate_kappa = gate_kappa

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.normalizer(obs)
        raw_action = self.raw_policy.mean_action(s)
        latent_action = self.cvae.decode(s, self.latent_policy.mean_action(s))
        gate_advantage = gate_lcb(self.critic, s, raw_action, latent_action, self.gate_kappa) / self.gate_scale
        support_score = self.cvae.support_score(s, raw_action)
        return raw_action, latent_action, gate_advantage, support_score


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
