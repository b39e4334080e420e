"""The critic ensemble's targets: min over all members, or over a random subset per update (RLPD/SUPE)."""
from __future__ import annotations

import itertools

import torch

from spaars_robot.nn.critics import QEnsemble


def _critic(members: int) -> QEnsemble:
    torch.manual_seed(0)
    return QEnsemble(4, 2, (16, 16), members, layer_norm=True)


def test_full_min_is_the_default_and_draws_nothing():
    critic, obs, act = _critic(10), torch.randn(32, 4), torch.rand(32, 2)
    generator = torch.Generator().manual_seed(1)
    before = generator.get_state()
    assert torch.equal(critic.target_min(obs, act, None, generator), critic(obs, act).min(0).values)
    assert torch.equal(critic.target_min(obs, act, 10, generator), critic(obs, act).min(0).values)
    assert torch.equal(generator.get_state(), before)  # no subset: the run's random stream is untouched


def test_subset_min_is_the_min_of_two_members_and_varies_between_updates():
    critic, obs, act = _critic(10), torch.randn(32, 4), torch.rand(32, 2)
    q = critic(obs, act)
    pairs = {pair: q[list(pair)].min(0).values for pair in itertools.combinations(range(10), 2)}
    generator = torch.Generator().manual_seed(1)
    drawn = []
    for _ in range(20):
        target = critic.target_min(obs, act, 2, generator)
        match = [pair for pair, value in pairs.items() if torch.equal(value, target)]
        assert match, "the target is not the min of any two members"
        drawn.append(match[0])
        assert (target >= q.min(0).values).all()  # less pessimistic than the min over all ten
    assert len(set(drawn)) > 5  # a fresh pair every update, not one fixed pair
