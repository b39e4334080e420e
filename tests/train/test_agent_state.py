"""Every agent's checkpoint state is complete: an agent rebuilt from a differently seeded start, loaded from
a weights-only round trip of another agent's state, continues bit-identically (same batches, same samples).
The kill -9 test covers this through the runner for SPAARS; this covers IQL and SAC too, in milliseconds."""
from __future__ import annotations

import io

import pytest
import torch

from spaars_robot.config.training import resolve_config
from spaars_robot.data.replay import ReplayBuffer, mixed_batch


def _agent(algo: str, init_seed: int):
    base_algo = "spaars" if algo.startswith("spaars") else algo
    config = resolve_config("smoke", {"task": "hopper", "dataset": "unused", "algo": base_algo, "seed": 0}, [])
    generator = torch.Generator().manual_seed(init_seed)
    torch.manual_seed(init_seed)
    if algo == "sac":
        from spaars_robot.algos.sac import SAC, SACConfig

        return SAC(11, 3, SACConfig(hidden=(32, 32), batch_size=64), init_seed, random_steps=0)
    from spaars_robot.algos.offline import OfflineNets

    nets = OfflineNets(11, 3, config.pretrain)
    if algo == "iql":
        from spaars_robot.algos.iql import IQLAgent

        return IQLAgent(nets, config, generator)
    from spaars_robot.algos.spaars import SPAARSAgent

    return SPAARSAgent(nets, config, generator)


def _buffer(seed: int) -> ReplayBuffer:
    g = torch.Generator().manual_seed(seed)
    n = 400
    return ReplayBuffer.from_tensors({"obs": torch.randn(n, 11, generator=g), "action": torch.rand(n, 3, generator=g) * 2 - 1,
                                      "reward": torch.randn(n, generator=g), "next_obs": torch.randn(n, 11, generator=g),
                                      "done": (torch.rand(n, generator=g) < 0.05).float()})


def _run(agent, offline, online, updates: int) -> None:
    for _ in range(updates):
        agent.update(mixed_batch(offline, online, 64, 0.5, agent.generator))


def _flat(state, prefix=""):
    if isinstance(state, dict):
        for key, value in state.items():
            yield from _flat(value, f"{prefix}{key}.")
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            yield from _flat(value, f"{prefix}{i}.")
    else:
        yield prefix, state


def _equal(a, b) -> list[str]:
    """The entries where two states differ (a key present in only one counts as a difference)."""
    fa, fb = dict(_flat(a)), dict(_flat(b))
    if fa.keys() != fb.keys():
        return sorted(set(fa) ^ set(fb))
    return [k for k in fa if not (torch.equal(fa[k], fb[k]) if isinstance(fa[k], torch.Tensor) else fa[k] == fb[k])]


@pytest.mark.parametrize("algo", ["iql", "sac", "spaars_latent", "spaars_gated"])
def test_agent_resumed_from_its_state_continues_bit_identically(algo):
    offline, online = _buffer(1), _buffer(2)
    original = _agent(algo, init_seed=0)
    if algo == "spaars_gated":
        original.phase = "gated"  # the gated update (TD3+BC raw actor, gated critic targets); restored from state
    _run(original, offline, online, 5)
    blob = io.BytesIO()
    torch.save({"agent": original.state_dict(), "generator": original.generator.get_state()}, blob)
    blob.seek(0)
    saved = torch.load(blob, weights_only=True)  # what safe_torch_load accepts from a checkpoint

    resumed = _agent(algo, init_seed=7)  # other weights and generator: everything must come from the state
    assert _equal(resumed.state_dict(), original.state_dict()), "the two starts should differ before loading"
    resumed.load_state_dict(saved["agent"])
    resumed.generator.set_state(saved["generator"])
    _run(original, offline, online, 5)
    _run(resumed, offline, online, 5)
    assert _equal(resumed.state_dict(), original.state_dict()) == []
