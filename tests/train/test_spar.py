"""SPAR's maths on hand-built pieces: residual zero at init and always bounded, LSI prefers better candidates,
the offline stages resume exactly, and the tag of runs made before SPAR existed is unchanged."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from spaars_robot.algos.spar import (
    RectifiedPolicy,
    candidate_weights,
    lsi_loss,
    make_rectified,
    td3bc_loss,
    value_gradient_actor,
)
from spaars_robot.config.training import SPARConfig, hyperparameter_tag, resolve_config
from spaars_robot.data.replay import ReplayBuffer
from spaars_robot.nn.cvae import CVAE

OBS, ACT, LAT = 5, 2, 4


def test_residual_is_zero_at_initialisation_when_asked_and_not_otherwise():
    torch.manual_seed(0)
    s = torch.randn(64, OBS)
    zero = RectifiedPolicy(OBS, ACT, LAT, (32, 32), bound=0.3, zero_init=True)
    assert torch.equal(zero.mean_action(s), zero.base_action(s).clamp(-1, 1))
    free = RectifiedPolicy(OBS, ACT, LAT, (32, 32), bound=0.3, zero_init=False)
    assert not torch.allclose(free.mean_action(s), free.base_action(s))


def test_residual_is_bounded_always():
    torch.manual_seed(0)
    policy = RectifiedPolicy(OBS, ACT, LAT, (32, 32), bound=0.2, zero_init=False)
    with torch.no_grad():  # drive the residual head to saturation
        policy.residual_net[-1].weight.mul_(1e4)
        policy.residual_net[-1].bias.fill_(1e4)
    s = torch.randn(256, OBS) * 10
    base = policy.base_action(s)
    residual = policy.residual(s, base)
    assert residual.abs().max() <= 0.2 + 1e-6 and residual.abs().max() > 0.19
    action = policy.mean_action(s)
    assert action.abs().max() <= 1.0


def test_bc_baseline_switches_the_residual_off():
    policy = RectifiedPolicy(OBS, ACT, LAT, (32, 32), bound=0.3, zero_init=False)
    s = torch.randn(16, OBS)
    policy.residual_on.fill_(0.0)
    assert torch.equal(policy.mean_action(s), policy.base_action(s).clamp(-1, 1))


def test_candidate_weights_prefer_higher_advantage_and_ignore_the_reward_scale():
    q = torch.tensor([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]])
    w = candidate_weights(q, temperature=0.5)
    assert torch.allclose(w.sum(1), torch.ones(2))
    assert (w[0].diff() > 0).all() and (w[1].diff() < 0).all()
    assert torch.allclose(candidate_weights(q * 1000 + 7, 0.5), w, atol=1e-6)  # scale- and shift-free
    assert candidate_weights(q, 0.1)[0, -1] > w[0, -1]  # lower temperature: more selective


class _HandBuiltCritic(nn.Module):
    """Q(s, a) = -||a - a_star||^2 for two identical members: the best action is a_star everywhere."""

    def __init__(self, a_star: torch.Tensor) -> None:
        super().__init__()
        self.a_star = a_star

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        q = -(action - self.a_star).pow(2).sum(-1)
        return torch.stack([q, q])


class _IdentityDecoderCVAE(CVAE):
    """A 'manifold' that is the whole action box: encode(a) = atanh(a) padded, decode(z) = tanh(z[:ACT])."""

    def encode(self, obs, action):
        mu = torch.cat([torch.atanh(action.clamp(-0.999, 0.999)), torch.zeros(action.shape[0], LAT - ACT)], -1)
        return mu, torch.zeros_like(mu)

    def decode(self, obs, z):
        return torch.tanh(z[..., :ACT])


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-decoding"])
def test_latent_self_imitation_moves_the_rectified_action_towards_the_better_candidates(bf16):
    """Also with the candidates decoded in bf16 (`spar.lsi_decode_bf16`; the critic scores them in fp32)."""
    torch.manual_seed(0)
    cfg = SPARConfig(hidden=(32, 32), residual_bound=0.5, candidates=16, latent_sigma=0.5, temperature=0.3, lr=3e-3,
                     lsi_decode_bf16=bf16)
    policy = make_rectified(OBS, ACT, LAT, cfg)
    a_star = torch.tensor([0.4, -0.3])
    critic, cvae = _HandBuiltCritic(a_star), _IdentityDecoderCVAE(OBS, ACT, LAT, (8,))
    obs = torch.randn(512, OBS)
    with torch.no_grad():  # anchor: a constant action away from a_star, within the residual's reach
        policy.anchor[-1].weight.zero_()
        policy.anchor[-1].bias.copy_(torch.atanh(torch.tensor([0.0, 0.0])))
    policy.freeze_anchor()
    opt = torch.optim.Adam(policy.residual_parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    before = (policy.mean_action(obs) - a_star).pow(2).sum(-1).mean()
    for _ in range(300):
        loss, metrics = lsi_loss(policy, cvae, critic, obs[torch.randint(0, 512, (64,), generator=gen)], cfg, gen)
        assert loss.dtype == torch.float32
        opt.zero_grad()
        loss.backward(inputs=policy.residual_parameters())
        opt.step()
    after = (policy.mean_action(obs) - a_star).pow(2).sum(-1).mean()
    assert after < 0.1 * before, (float(before), float(after))
    # the anchor never moved: all learning is in the residual
    assert torch.equal(policy.base_action(obs), torch.zeros(512, ACT))


@pytest.mark.parametrize("alpha", [0.0, 2.5, 50.0])
def test_td3bc_starts_at_the_anchor_and_its_value_gradient_pulls_off_the_data_as_alpha_grows(alpha):
    """td3bc (issue 19's value-gradient counterpart) frees SPAR's anchor; alpha weighs Q against the BC term.

    Data at a = 0, the critic Q = 10 - ||a - a_star||^2 (|Q| ~ 10, so lambda ~ alpha / 10): the loss is minimal at
    a = lambda / (1 + lambda) a_star, so alpha 0 stays on the data, 2.5 goes ~20 % of the way, 50 ~83 %. The SPAR
    policy it was copied from never moves.
    """
    torch.manual_seed(0)
    spar = RectifiedPolicy(OBS, ACT, LAT, (32, 32), bound=0.3, zero_init=False)
    with torch.no_grad():
        spar.anchor[-1].weight.zero_()
        spar.anchor[-1].bias.zero_()
    spar.freeze_anchor()
    actor = value_gradient_actor(spar)
    obs = torch.randn(256, OBS)
    assert torch.equal(actor.mean_action(obs), spar.base_action(obs))  # the residual is off: the bare anchor
    assert not torch.equal(spar.mean_action(obs), spar.base_action(obs))  # (the original keeps its residual)
    params = list(actor.anchor.parameters())
    assert all(p.requires_grad for p in params) and not any(p.requires_grad for p in spar.anchor.parameters())
    a_star = torch.tensor([0.6, -0.6])
    shifted = _HandBuiltCritic(a_star)

    def critic(o: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return 10.0 + shifted(o, a)

    data = torch.zeros(256, ACT)
    opt = torch.optim.Adam(params, lr=3e-3)
    for _ in range(400):
        loss, metrics = td3bc_loss(actor, critic, obs, data, alpha)
        opt.zero_grad()
        loss.backward(inputs=params)
        opt.step()
    moved = actor.mean_action(obs).mean(0) / a_star  # share of the way from the data to the critic's optimum
    if alpha == 0.0:
        assert moved.abs().max() < 0.02
    elif alpha == 2.5:
        assert ((moved > 0.12) & (moved < 0.3)).all(), moved
    else:
        assert ((moved > 0.75) & (moved < 0.9)).all(), moved
    assert torch.equal(spar.base_action(obs), torch.zeros(256, ACT))
    assert set(metrics) == {"td3bc/q", "td3bc/bc_error"}


def test_offline_stages_resume_exactly(tmp_path):
    from spaars_robot.algos.offline import OfflineNets
    from spaars_robot.config.training import PretrainConfig
    from spaars_robot.train.spar_offline import spar_offline

    torch.manual_seed(0)
    n = 400
    buffer = ReplayBuffer.from_tensors({"obs": torch.randn(n, OBS), "action": torch.rand(n, ACT) * 2 - 1,
                                        "reward": torch.randn(n), "next_obs": torch.randn(n, OBS),
                                        "done": torch.zeros(n), "truncated": torch.zeros(n, dtype=torch.bool)})
    nets = OfflineNets(OBS, ACT, PretrainConfig(hidden=(16, 16), cvae_hidden=(16, 16), cvae_latent_dim=LAT))
    cfg = SPARConfig(anchor_steps=30, residual_steps=20, lsi_steps=30, batch_size=32, hidden=(16, 16))
    whole, _ = spar_offline(nets, buffer, cfg, seed=3)
    partial = tmp_path / "spar.partial.pt"
    import spaars_robot.train.spar_offline as mod

    class _Killed(Exception):
        pass

    original = mod.atomic_torch_save

    def save_then_die(path, payload):  # die right after the step-40 checkpoint (inside the residual stage)
        original(path, payload)
        if payload["step"] == 40:
            raise _Killed

    mod.atomic_torch_save = save_then_die
    try:
        try:
            spar_offline(nets, buffer, cfg, seed=3, checkpoint=partial, checkpoint_every=20)
        except _Killed:
            pass
    finally:
        mod.atomic_torch_save = original
    resumed, info = spar_offline(nets, buffer, cfg, seed=3, checkpoint=partial, checkpoint_every=20)
    assert info["resumed_at_step"] == 40
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_spar_fields_do_not_change_the_tag_of_earlier_runs():
    sets = ["online.transition.rule=evidence", "online.gate.scale=advantage", "online.gate.tau_rel=1.0",
            "online.gate.hysteresis_rel=0.5"]
    base = resolve_config("short", {"task": "hopper", "dataset": "x"})
    tagged = resolve_config("short", {"task": "hopper", "dataset": "x"}, sets)
    assert hyperparameter_tag(tagged, base) == "set-e144a1f8"  # committed before SPAR existed
    with_spar = resolve_config("short", {"task": "hopper", "dataset": "x"}, ["online.raw_init=spar"])
    assert hyperparameter_tag(with_spar, base).startswith("set-")
    other = resolve_config("short", {"task": "hopper", "dataset": "x"}, ["spar.temperature=1.0"])
    assert hyperparameter_tag(other, base) not in ("", hyperparameter_tag(with_spar, base))


def test_bf16_candidate_decoding_leaves_fp32_cache_keys_alone():
    """`spar.lsi_decode_bf16` off (the default) is absent from the stages' cache key, so entries cached before the
    field existed are still found; on, it is a different entry."""
    from spaars_robot.train.spar_offline import spar_cache_key

    assert spar_cache_key("entry", 0, SPARConfig()) == "spar-e680f07fb4c952642899"  # the key before the field
    assert spar_cache_key("entry", 0, SPARConfig(lsi_decode_bf16=True)) != spar_cache_key("entry", 0, SPARConfig())
