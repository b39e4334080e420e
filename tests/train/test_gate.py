"""Advantage gate on hand-built critics: the LCB maths, the threshold and the hysteresis."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from spaars_robot.algos.gate import AdvantageGate, choose_scale, gate_lcb


class HandCritic(nn.Module):
    """Q_i(s, a) = c_i * sum(a): member i scales the action sum by c_i (so A_i = c_i * (sum a_raw - sum a_lat))."""

    def __init__(self, coefficients: list[float]) -> None:
        super().__init__()
        self.c = torch.tensor(coefficients).unsqueeze(1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.c * action.sum(-1).unsqueeze(0)


def test_lcb_is_mean_minus_kappa_std_of_member_advantages():
    critic = HandCritic([1.0, 3.0])
    obs = torch.zeros(2, 4)
    raw = torch.tensor([[0.5, 0.5], [0.0, 0.0]])
    lat = torch.tensor([[0.0, 0.0], [0.5, 0.5]])
    # state 0: A = (1, 3) -> mean 2, std 1 ; state 1: A = (-1, -3) -> mean -2, std 1
    lcb = gate_lcb(critic, obs, raw, lat, kappa=1.0)
    assert torch.allclose(lcb, torch.tensor([1.0, -3.0]))
    assert torch.allclose(gate_lcb(critic, obs, raw, lat, kappa=2.5), torch.tensor([-0.5, -4.5]))


def test_confident_disagreement_keeps_latent():
    # members disagree on the sign: mean advantage positive but the LCB is negative -> latent
    critic = HandCritic([4.0, -1.0])
    obs, raw, lat = torch.zeros(1, 2), torch.ones(1, 1), torch.zeros(1, 1)
    lcb = gate_lcb(critic, obs, raw, lat, kappa=1.0)
    mean_advantage = float(gate_lcb(critic, obs, raw, lat, kappa=0.0))
    gate = AdvantageGate(tau_rel=0.0, hysteresis_rel=0.0)
    assert mean_advantage == pytest.approx(1.5) and float(lcb) < 0  # raw looks better on average, not confidently
    assert not gate.decide(float(lcb), scale=10.0)


def test_hysteresis_prevents_chatter_and_reset_closes():
    gate = AdvantageGate(tau_rel=0.1, hysteresis_rel=0.05)
    q_scale = 10.0  # open above 1.0, once open stay open above 0.5
    decisions = [gate.decide(lcb, q_scale) for lcb in (0.9, 1.1, 0.7, 0.6, 0.4, 0.9, 1.2)]
    assert decisions == [False, True, True, True, False, False, True]
    gate.reset()
    assert not gate.is_open
    assert not gate.decide(0.7, q_scale)  # 0.7 only keeps an open gate open


def test_batch_open_has_no_memory():
    gate = AdvantageGate(tau_rel=0.1, hysteresis_rel=0.05)
    opened = gate.batch_open(torch.tensor([0.9, 1.1, 0.7]), torch.tensor(10.0))
    assert opened.tolist() == [False, True, False]


def test_gate_scale_follows_the_config_and_the_advantage_scale_is_mean_abs_advantage(tiny_hopper_dataset, tmp_path):
    """With scale=advantage the thresholds multiply mean |Q(s,a_raw) - Q(s,a_lat)| on the recent states the agent
    was last shown; with scale=q (default) they multiply the running mean |Q|, as before the option existed."""
    from spaars_robot.config.tasks import load_task
    from spaars_robot.config.training import resolve_config
    from spaars_robot.data.dataset import OfflineDataset
    from spaars_robot.train.agents import build_agent

    fields = {"task": "hopper", "dataset": str(tiny_hopper_dataset), "algo": "spaars", "seed": 0}
    dataset = OfflineDataset.load(tiny_hopper_dataset)
    task = load_task("hopper")
    for scale in ("q", "advantage"):
        config = resolve_config("smoke", fields, [f"online.gate.scale={scale}"])
        built = build_agent(config, task, dataset, tmp_path / "cache", False, None)
        agent, nets = built.agent, built.nets
        obs = nets.normalizer(torch.as_tensor(dataset.obs[:500], dtype=torch.float32))
        signals = agent.after_eval(0, {"return_mean": 0.0}, obs)
        with torch.no_grad():
            raw, lat = nets.raw_policy.mean_action(obs), nets.decoded_latent_mean(obs)
            advantage = (nets.critic(obs, raw) - nets.critic(obs, lat)).mean(0)
            expected = float(advantage.abs().mean())
        assert abs(signals["adv_scale"] - expected) <= 1e-5 * expected + 1e-7  # + the 1e-8 floor
        # the signed mean (figure 2) is recorded too
        assert signals["adv_mean"] == pytest.approx(float(advantage.mean()), rel=1e-5, abs=1e-7)
        assert 0 < expected < 0.5 * float(agent.q_scale)  # the two scales differ: the choice matters
        assert agent.gate_scale() is (agent.adv_scale if scale == "advantage" else agent.q_scale)


def test_choose_scale_is_the_one_rule_for_training_and_export():
    """Training and export both ask choose_scale; a checkpoint without an advantage scale cannot be exported as
    advantage-scaled (its gate would fire at states the trained one did not), and an unknown kind is refused."""
    assert choose_scale("q", 120.0, 0.03) == 120.0
    assert choose_scale("advantage", 120.0, 0.03) == 0.03
    with pytest.raises(ValueError, match="no advantage scale"):
        choose_scale("advantage", 120.0, None)
    with pytest.raises(ValueError, match="unknown gate scale"):
        choose_scale("Q", 120.0, 0.03)


class PrefersRawWhereFirstCoordinatePositive(nn.Module):
    """Q_i(s, a) = -c_i * s_0 * ||a - mu_raw(s)||^2, so A_i = c_i * s_0 * ||a_lat - a_raw||^2: with c = (1, 2) and
    kappa = 1 the LCB is positive exactly where s_0 > 0. The agent's gate must then pick raw there and latent
    elsewhere, when acting, exploring and building critic targets."""

    def __init__(self, raw_policy: nn.Module) -> None:
        super().__init__()
        self.raw_policy = raw_policy
        self.c = torch.tensor([[1.0], [2.0]])
        self.unused = nn.Parameter(torch.zeros(1))  # the agent builds an optimiser over the critic

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        gap = (action - self.raw_policy.mean_action(obs)).pow(2).sum(-1)
        return -self.c * (obs[:, 0] * gap).unsqueeze(0)


def _agent():
    from spaars_robot.algos.spaars import SPAARSAgent
    from spaars_robot.config.training import resolve_config
    from spaars_robot.train.pretrain import OfflineNets

    config = resolve_config("smoke", {"task": "hopper", "dataset": "unused", "algo": "spaars", "seed": 0},
                            ["online.gate.hysteresis_rel=0", "online.gate.kappa=1"])
    torch.manual_seed(0)
    nets = OfflineNets(11, 3, config.pretrain)
    nets.critic = PrefersRawWhereFirstCoordinatePositive(nets.raw_policy)
    agent = SPAARSAgent(nets, config, torch.Generator().manual_seed(0))
    agent.phase = "gated"
    return agent, nets


def _obs(first: float):
    import numpy as np

    obs = np.full(11, 0.3, dtype=np.float32)
    obs[0] = first
    return obs


def test_agent_acts_raw_only_where_the_critic_prefers_raw():
    agent, nets = _agent()
    for first, expected in ((1.0, "raw"), (-1.0, "latent")):
        agent.begin_episode(evaluation=True)
        action, source = agent.act(_obs(first))
        s = torch.as_tensor(_obs(first)).unsqueeze(0)
        chosen = nets.raw_policy.mean_action(s) if expected == "raw" else nets.decoded_latent_mean(s)
        assert source == expected and torch.allclose(torch.as_tensor(action), chosen[0])
        agent.begin_episode()
        assert agent.explore(_obs(first))[1] == expected


def test_training_and_evaluation_gates_keep_separate_state():
    agent, _ = _agent()
    agent.begin_episode()
    agent.explore(_obs(1.0))
    assert agent.gate.is_open and not agent.eval_gate.is_open
    agent.begin_episode(evaluation=True)
    assert agent.gate.is_open  # an evaluation episode does not reset the training trajectory's gate


def test_critic_targets_follow_the_gate_state_by_state():
    agent, nets = _agent()
    next_obs = torch.stack([torch.as_tensor(_obs(f)) for f in (1.0, -1.0, 2.0, -0.5)])
    target_actions = agent._next_action(next_obs)
    raw = nets.raw_policy.mean_action(next_obs)
    for row, raw_expected in enumerate((True, False, True, False)):
        assert torch.equal(target_actions[row], raw[row]) == raw_expected, row


def test_gated_target_raw_values_the_raw_continuation_everywhere():
    """`online.gated_target=raw`: once gated, every TD-target action is the raw mean, also where the entry test keeps
    latent; the latent phase's target is untouched; refused where no gated phase chooses; the default stays out of the
    tag so that earlier runs keep their names."""
    from spaars_robot.algos.spaars import SPAARSAgent
    from spaars_robot.config.training import hyperparameter_tag, resolve_config
    from spaars_robot.errors import ConfigError

    next_obs = torch.stack([torch.as_tensor(_obs(f)) for f in (1.0, -1.0, 2.0, -0.5)])
    _, nets = _agent()
    raw = nets.raw_policy.mean_action(next_obs)
    sets = ["online.gate.hysteresis_rel=0", "online.gate.kappa=1", "online.critic_target_action=mean"]
    entry = SPAARSAgent(nets, resolve_config("smoke", {"task": "hopper", "dataset": "unused", "algo": "spaars",
                                                        "seed": 0}, sets), torch.Generator().manual_seed(0))
    config = resolve_config("smoke", {"task": "hopper", "dataset": "unused", "algo": "spaars", "seed": 0},
                            [*sets, "online.gated_target=raw"])
    agent = SPAARSAgent(nets, config, torch.Generator().manual_seed(0))
    entry.phase = agent.phase = "gated"
    assert [torch.equal(row, r) for row, r in zip(entry._next_action(next_obs), raw)] == [True, False, True, False]
    assert torch.equal(agent._next_action(next_obs), raw)
    agent.phase = "latent"
    assert torch.equal(agent._next_action(next_obs), nets.decoded_latent_mean(next_obs))
    for algo in ("latent", "raw"):
        with pytest.raises(ConfigError, match="gated_target"):
            resolve_config("smoke", {"task": "hopper", "dataset": "unused", "algo": algo, "seed": 0},
                           ["online.gated_target=raw"])
    base = resolve_config("short", {"task": "hopper", "dataset": "x"})
    assert hyperparameter_tag(resolve_config("short", {"task": "hopper", "dataset": "x"},
                                             ["online.gated_target=entry"]), base) == ""
    assert hyperparameter_tag(resolve_config("short", {"task": "hopper", "dataset": "x"},
                                             ["online.gated_target=raw"]), base).startswith("set-")


def test_support_monitor_vetoes_an_out_of_support_raw_action_like_the_server():
    """`online.support_monitor`: where the gate chose raw and the action's support score is over the threshold, the
    latent action is executed instead (source "fallback"), in evaluation (the raw mean is judged) and in training
    (the noisy action); the latch keeps vetoing within the export's hysteresis band; a new episode clears it; off,
    the same states execute raw; other algorithms refuse it."""
    from spaars_robot.algos.latch import SUPPORT_HYSTERESIS_REL
    from spaars_robot.algos.spaars import SPAARSAgent
    from spaars_robot.config.training import resolve_config
    from spaars_robot.errors import ConfigError

    _, nets = _agent()
    config = resolve_config("smoke", {"task": "hopper", "dataset": "unused", "algo": "spaars", "seed": 0},
                            ["online.gate.hysteresis_rel=0", "online.gate.kappa=1", "online.support_monitor=true"])
    agent = SPAARSAgent(nets, config, torch.Generator().manual_seed(0))
    agent.phase = "gated"
    obs = _obs(1.0)  # the critic prefers raw here
    s = agent._s(obs)
    with torch.no_grad():
        score = float(nets.cvae.support_score(s, nets.raw_policy.mean_action(s))[0])
    assert score > 0
    nets.support_threshold.fill_(score * 0.9)  # the raw mean is out of support
    agent.begin_episode(evaluation=True)
    action, source = agent.act(obs)
    assert source == "fallback" and torch.allclose(torch.as_tensor(action), nets.decoded_latent_mean(s)[0])
    # inside the band (threshold - hysteresis < score <= threshold) an engaged monitor keeps vetoing
    band_threshold = score / (1 - 0.5 * SUPPORT_HYSTERESIS_REL)  # score = threshold - half the hysteresis
    nets.support_threshold.fill_(band_threshold)
    assert agent.act(obs)[1] == "fallback"
    agent.begin_episode(evaluation=True)  # a clear monitor lets the same score through
    assert agent.act(obs)[1] == "raw"
    nets.support_threshold.fill_(-1.0)  # every action out of support: training falls back to the latent sample
    agent.begin_episode()
    assert agent.explore(obs)[1] == "fallback"
    off, _ = _agent()  # the monitor off: the same out-of-support raw action is executed
    off.nets.support_threshold.fill_(-1.0)
    off.begin_episode(evaluation=True)
    assert off.act(obs)[1] == "raw" and off.explore(obs)[1] == "raw"
    with pytest.raises(ConfigError, match="support_monitor"):
        resolve_config("smoke", {"task": "hopper", "dataset": "unused", "algo": "raw", "seed": 0},
                       ["online.support_monitor=true"])


def test_critic_target_latent_action_is_a_sample_or_the_deployed_mean():
    """`online.critic_target_action`: sampled targets explore (two draws differ, neither is the deployed action);
    `mean` targets are the decoded mean the latent controller deploys, in both phases; the tag of earlier runs
    holds because the default is left out of it."""
    from spaars_robot.algos.spaars import SPAARSAgent
    from spaars_robot.config.training import hyperparameter_tag, resolve_config

    next_obs = torch.stack([torch.as_tensor(_obs(f)) for f in (-1.0, -0.5)])  # the gate prefers latent here
    agent, nets = _agent()
    deployed = nets.decoded_latent_mean(next_obs)
    for phase in ("latent", "gated"):
        agent.phase = phase
        first, second = agent._next_action(next_obs), agent._next_action(next_obs)
        assert not torch.equal(first, second) and not torch.allclose(first, deployed)
    config = resolve_config("smoke", {"task": "hopper", "dataset": "unused", "algo": "spaars", "seed": 0},
                            ["online.gate.hysteresis_rel=0", "online.gate.kappa=1",
                             "online.critic_target_action=mean"])
    agent = SPAARSAgent(nets, config, torch.Generator().manual_seed(0))
    for phase in ("latent", "gated"):
        agent.phase = phase
        assert torch.equal(agent._next_action(next_obs), deployed)
    base = resolve_config("short", {"task": "hopper", "dataset": "x"})
    assert hyperparameter_tag(resolve_config("short", {"task": "hopper", "dataset": "x"},
                                             ["online.critic_target_action=sample"]), base) == ""
    assert hyperparameter_tag(resolve_config("short", {"task": "hopper", "dataset": "x"},
                                             ["online.critic_target_action=mean"]), base).startswith("set-")


def test_critic_td_target_uses_the_nstep_pieces_when_the_batch_carries_them():
    """`online.critic_nstep`: the TD target is the n-step sum plus gamma^m times the target critic at s_(i+m); with
    one-step pieces it equals the one-step target exactly; on an algorithm without the shared critic it is refused."""
    from spaars_robot.config.training import resolve_config
    from spaars_robot.data.replay import ReplayBuffer, nstep_targets
    from spaars_robot.errors import ConfigError
    from spaars_robot.nn.critics import QEnsemble

    agent, nets = _agent()
    agent.phase = "latent"
    agent.cfg = agent.cfg.model_copy(update={"critic_target_action": "mean"})  # a deterministic target action
    gen = torch.Generator().manual_seed(0)
    buf, obs = ReplayBuffer(40, 11, 3), torch.randn(41, 11, generator=gen)
    for t in range(40):
        buf.add(obs[t], torch.rand(3, generator=gen) * 2 - 1, float(t % 7), obs[t + 1], done=t == 25)
    torch.manual_seed(0)
    critic, target = QEnsemble(11, 3, (32, 32), 2, layer_norm=True), QEnsemble(11, 3, (32, 32), 2, layer_norm=True)
    rows = torch.randint(0, 40, (32,), generator=gen)
    batch = {name: getattr(buf, name)[rows] for name in ("obs", "action", "reward", "next_obs", "done")}

    def loss(b: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return agent.critic_td_loss(critic, target, b, None, torch.Generator().manual_seed(2))

    one_step = loss(batch)[0]
    assert torch.allclose(loss(batch | nstep_targets(buf, rows, 1, agent.cfg.gamma))[0], one_step)
    pieces = nstep_targets(buf, rows, 5, agent.cfg.gamma)
    five_step, q = loss(batch | pieces)
    with torch.no_grad():
        s_m = pieces["nstep_next_obs"]
        boot = target.target_min(s_m, nets.decoded_latent_mean(s_m), None, torch.Generator().manual_seed(2))
        y = pieces["nstep_reward"] + pieces["nstep_discount"] * (1 - pieces["nstep_done"]) * boot
    assert torch.allclose(five_step, (q - y).pow(2).mean(1).sum()) and not torch.allclose(five_step, one_step)
    with pytest.raises(ConfigError, match="critic_nstep=3: only spaars, latent, raw"):
        resolve_config("smoke", {"task": "hopper", "dataset": "x", "algo": "iql"}, ["online.critic_nstep=3"])
    with pytest.raises(ConfigError, match="critic_target_action=mean: only"):
        resolve_config("smoke", {"task": "hopper", "dataset": "x", "algo": "sac"}, ["online.critic_target_action=mean"])
