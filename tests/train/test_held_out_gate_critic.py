"""`online.gate.critic=held_out`: the gate reads a critic that no actor is optimised against.

Why it exists (issue 16): on hopper the shared critic's raw-vs-latent advantage was anti-correlated with the
measured truth, the signature of actors that found the critic's overestimates. These tests pin what the option
promises: the gate decides by the held-out critic; no actor and not the shared critic depend on it, so a run is the
shared-gate run's bit for bit until the gate acts; it learns; it survives a checkpoint; other algorithms refuse it."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from tests.train.test_gate import PrefersRawWhereFirstCoordinatePositive, _obs


class PrefersLatentEverywhere(nn.Module):
    """Q_i(s, a) = -||a - mu_raw(s)||^2 reversed: the raw action is always the worst, so A < 0 on every state."""

    def __init__(self, raw_policy: nn.Module) -> None:
        super().__init__()
        self.raw_policy = raw_policy
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        gap = (action - self.raw_policy.mean_action(obs)).pow(2).sum(-1)
        return gap.unsqueeze(0).expand(2, -1)


def _config(*sets: str, algo: str = "spaars"):
    from spaars_robot.config.training import resolve_config

    return resolve_config("smoke", {"task": "hopper", "dataset": "unused", "algo": algo, "seed": 0},
                          ["online.gate.hysteresis_rel=0", "online.gate.kappa=1", *sets])


def _agent(*sets: str):
    from spaars_robot.algos.spaars import SPAARSAgent
    from spaars_robot.train.pretrain import OfflineNets

    config = _config(*sets)
    torch.manual_seed(0)
    nets = OfflineNets(11, 3, config.pretrain)
    return SPAARSAgent(nets, config, torch.Generator().manual_seed(0)), nets


def _batch(seed: int, size: int = 64) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"obs": torch.randn(size, 11, generator=gen), "action": torch.rand(size, 3, generator=gen) * 2 - 1,
            "reward": torch.randn(size, generator=gen), "next_obs": torch.randn(size, 11, generator=gen),
            "done": (torch.rand(size, generator=gen) < 0.1).float(), "online_from": size // 2}


def test_the_gate_decides_by_the_held_out_critic_not_the_shared_one():
    agent, nets = _agent("online.gate.critic=held_out")
    nets.critic = PrefersLatentEverywhere(nets.raw_policy)  # what the actors maximise: latent everywhere
    agent.held_out = PrefersRawWhereFirstCoordinatePositive(nets.raw_policy)
    agent.phase = "gated"
    for first, expected in ((1.0, "raw"), (-1.0, "latent")):
        agent.begin_episode(evaluation=True)
        assert agent.act(_obs(first))[1] == expected
    next_obs = torch.stack([torch.as_tensor(_obs(f)) for f in (1.0, -1.0)])
    raw = nets.raw_policy.mean_action(next_obs)
    targets = agent._next_action(next_obs)  # the TD target's continuation follows the same gate
    assert torch.equal(targets[0], raw[0]) and not torch.equal(targets[1], raw[1])
    shared_agent, shared_nets = _agent()
    shared_nets.critic = PrefersLatentEverywhere(shared_nets.raw_policy)
    shared_agent.phase = "gated"
    shared_agent.begin_episode(evaluation=True)
    assert shared_agent.act(_obs(1.0))[1] == "latent"  # the same state under the shared critic's gate


def _parameters(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_nothing_but_the_gate_reads_it_so_the_latent_phase_is_the_shared_gate_run_bit_for_bit():
    shared, shared_nets = _agent()
    held, held_nets = _agent("online.gate.critic=held_out")
    other, other_nets = _agent("online.gate.critic=held_out")
    with torch.no_grad():  # a second held-out critic with other weights: nothing else may notice
        for p in other.held_out.parameters():
            p.add_(0.5)
    start = _parameters(held.held_out)
    for step in range(20):
        for agent in (shared, held, other):
            agent.update(_batch(step))
    for nets in (held_nets, other_nets):
        for mine, theirs in zip(nets.parameters(), shared_nets.parameters(), strict=True):
            assert torch.equal(mine, theirs)
    assert torch.equal(held.generator.get_state(), shared.generator.get_state())
    assert any(not torch.equal(a, b) for a, b in zip(_parameters(held.held_out), start, strict=True))  # it learns


def test_a_checkpoint_restores_the_held_out_critic_and_its_random_stream():
    agent, _ = _agent("online.gate.critic=held_out")
    for step in range(5):
        agent.update(_batch(step))
    saved = io.BytesIO()  # through bytes, as a checkpoint file: a state dict shares the live optimiser tensors
    torch.save(agent.state_dict(), saved)
    saved.seek(0)
    state = torch.load(saved, weights_only=False)
    restored, _ = _agent("online.gate.critic=held_out")
    restored.load_state_dict(state)
    restored.generator.set_state(agent.generator.get_state())  # the runner checkpoints the run's own stream
    for mine, theirs in zip(_parameters(restored.held_out), _parameters(agent.held_out), strict=True):
        assert torch.equal(mine, theirs)
    assert torch.equal(restored.held_out_generator.get_state(), agent.held_out_generator.get_state())
    agent.update(_batch(99))
    restored.update(_batch(99))
    for mine, theirs in zip(_parameters(restored.held_out), _parameters(agent.held_out), strict=True):
        assert torch.equal(mine, theirs)  # and continues exactly (optimiser moments, target restored too)


def test_only_spaars_takes_it_and_the_default_keeps_earlier_tags():
    from spaars_robot.config.training import hyperparameter_tag, resolve_config
    from spaars_robot.errors import ConfigError

    for algo in ("iql", "latent", "raw", "sac", "spar"):
        with pytest.raises(ConfigError, match="online.gate.critic=held_out: only spaars"):
            _config("online.gate.critic=held_out", algo=algo)
    base = resolve_config("short", {"task": "hopper", "dataset": "x"})
    assert hyperparameter_tag(resolve_config("short", {"task": "hopper", "dataset": "x"},
                                             ["online.gate.critic=shared"]), base) == ""
    assert hyperparameter_tag(resolve_config("short", {"task": "hopper", "dataset": "x"},
                                             ["online.gate.critic=held_out"]), base).startswith("set-")
