"""SUPE's parts on hand-built data: the skill VAE, chunks that never cross episode ends, the 50/50 chunk batches,
the relabelling of unlabelled offline chunks, a skill held for H steps, and a checkpoint that resumes exactly.
(The CLI smoke runs are in test_algorithms_smoke.py, hopper; kitchen and antmaze in tests/envs.)"""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from spaars_robot.config.training import resolve_config
from spaars_robot.data.chunks import gather_chunks, mixed_chunk_batch, online_chunk_starts
from spaars_robot.data.replay import ReplayBuffer
from spaars_robot.nn.skills import SkillVAE

OBS, ACT, H = 5, 2, 4


def _replay(ends: dict[int, str], n: int = 20) -> ReplayBuffer:
    """n steps with obs[t] = t (so a chunk's indices can be read back), episode ends where `ends` says."""
    replay = ReplayBuffer(n + 5, OBS, ACT)
    for t in range(n):
        replay.add(torch.full((OBS,), float(t)), torch.zeros(ACT), float(t), torch.full((OBS,), t + 1.0),
                   ends.get(t) == "done", ends.get(t) == "truncated")
    return replay


def test_chunks_never_cross_an_episode_end():
    replay = _replay({5: "done", 11: "truncated"})
    starts = online_chunk_starts(replay, H).tolist()
    for t in starts:
        chunk = list(range(t, t + H))
        assert not any(step in (5, 11) for step in chunk[:-1]), f"chunk {chunk} crosses an end"
    # every start whose first H-1 steps hold no end is kept: an episode may end at a chunk's last step
    assert starts == [0, 1, 2, 6, 7, 8, 12, 13, 14, 15, 16]
    assert online_chunk_starts(_replay({}, n=3), H).numel() == 0


def test_a_chunk_is_its_steps_and_its_discounted_reward():
    replay = _replay({5: "done"})
    chunk = gather_chunks(replay, torch.tensor([2, 6]), H, gamma=0.5)
    assert chunk["obs"][:, :, 0].tolist() == [[2, 3, 4, 5], [6, 7, 8, 9]]
    assert chunk["chunk_reward"].tolist() == [2 + 0.5 * 3 + 0.25 * 4 + 0.125 * 5, 6 + 0.5 * 7 + 0.25 * 8 + 0.125 * 9]
    assert chunk["next_obs"][:, 0].tolist() == [6.0, 10.0] and chunk["done"].tolist() == [1.0, 0.0]


def test_batches_are_offline_until_the_replay_holds_a_chunk_then_half_and_half():
    offline, starts = _replay({9: "done"}), torch.tensor([0, 1, 2, 3])
    g = torch.Generator().manual_seed(0)
    empty = ReplayBuffer(10, OBS, ACT)
    batch = mixed_chunk_batch(offline, starts, empty, H, 0.99, 8, 0.5, g)
    assert not batch["online"].any() and batch["obs"].shape == (8, H, OBS)
    online = _replay({}, n=12)
    batch = mixed_chunk_batch(offline, starts, online, H, 0.99, 8, 0.5, g)
    assert batch["online"].tolist() == [False] * 4 + [True] * 4
    assert set(batch["obs"][:4, 0, 0].tolist()) <= {0.0, 1.0, 2.0, 3.0}  # the offline part from its own starts


def test_skill_vae_shapes_and_it_learns_a_tiny_dataset():
    torch.manual_seed(0)
    vae = SkillVAE(OBS, ACT, skill_dim=3, horizon=H, hidden=(32, 32), gru_hidden=16, gru_layers=2, kl_weight=0.1)
    obs = torch.randn(64, H, OBS)
    action = torch.tanh(obs[..., :ACT] * 2)  # actions a function of the state: learnable
    mean, std = vae.encode(obs, action)
    assert mean.shape == std.shape == (64, 3) and (std > 0).all()
    assert vae.decode_sample(obs[:, 0], mean, None).abs().max() <= 1.0
    assert vae.prior_dist(obs[:, 0])[0].shape == (64, 3)
    opt = torch.optim.Adam(vae.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    first = vae.loss(obs, action, g)[1]
    for _ in range(300):
        loss, _ = vae.loss(obs, action, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = vae.loss(obs, action, g)[1]
    assert last["skills/recon_mse"] < 0.2 * first["skills/recon_mse"]
    assert last["skills/nll"] < first["skills/nll"] - 2.0


def _buffers(seed: int = 0) -> tuple[ReplayBuffer, ReplayBuffer]:
    """(offline, online): 30 steps each, random observations, an offline episode end at step 9."""
    g = torch.Generator().manual_seed(seed)
    offline, online = _replay({9: "done"}, n=30), _replay({}, n=30)
    with torch.no_grad():
        offline.obs.normal_(generator=g)
        online.obs.normal_(generator=g)
    return offline, online


OFFLINE_STARTS = torch.arange(0, 6)


def _agent(offline_reward: str = "model", rnd_coef: float = 8.0, seed: int = 0, frozen_seed: int = 0):
    """A SUPE agent whose own networks start from `seed`; the frozen ones it is given (pretraining, skills: cached,
    not in its checkpoint) from `frozen_seed`."""
    from spaars_robot.algos.offline import OfflineNets
    from spaars_robot.algos.supe import SUPEAgent
    from spaars_robot.nn.skills import SkillVAE
    from spaars_robot.train.skills_offline import label_offline_chunks

    config = resolve_config("smoke", {"task": "hopper", "dataset": "unused", "algo": "supe", "seed": seed},
                            [f"supe.offline_reward={offline_reward}", f"supe.rnd_coef={rnd_coef}", "supe.horizon=4",
                             "supe.prior_steps=3"])
    torch.manual_seed(frozen_seed)
    nets = OfflineNets(OBS, ACT, config.pretrain)
    skills = SkillVAE.from_config(OBS, ACT, config.supe).requires_grad_(False)
    labels = label_offline_chunks(skills, _buffers()[0], OFFLINE_STARTS, block=4)  # blocks: the same labels
    return SUPEAgent(nets, skills, config, torch.Generator().manual_seed(seed), offline_min_reward=-1.0,
                     offline_labels=labels)


def _batch(agent, seed: int = 0) -> dict[str, torch.Tensor]:
    """A 50/50 chunk batch; the online chunks start where `agent` chose skills (marked on the first call)."""
    if not agent.skill_started.any():
        agent.skill_started[0:28:4] = True
        agent.executed[0:28:4] = torch.linspace(-0.5, 0.5, 7).unsqueeze(-1)
    offline, online = _buffers()
    return mixed_chunk_batch(offline, OFFLINE_STARTS, online, H, 0.99, 16, 0.5, torch.Generator().manual_seed(seed),
                             online_start_mask=agent.skill_started)


def test_online_chunks_start_only_where_a_skill_was_chosen_and_carry_it():
    agent = _agent()
    batch = _batch(agent)
    online = batch["online"]
    assert (batch["start"][online] % 4 == 0).all() and (batch["start"][~online] < 6).all()
    hl = agent.relabel(batch)
    assert torch.equal(hl["skill"][online], agent.executed[batch["start"][online]])


def test_offline_labels_are_the_encoders_reading_whatever_the_block_size():
    from spaars_robot.train.skills_offline import label_offline_chunks

    agent = _agent()
    offline = _buffers()[0]
    chunk = gather_chunks(offline, OFFLINE_STARTS, H, 1.0)
    expected = torch.tanh(agent.skills.encode(chunk["obs"], chunk["action"])[0])
    assert torch.allclose(agent.offline_labels[OFFLINE_STARTS], expected, atol=1e-6)
    assert torch.allclose(label_offline_chunks(agent.skills, offline, OFFLINE_STARTS, block=2),
                          agent.offline_labels, atol=1e-6)
    assert agent.offline_labels[6:].abs().sum() == 0  # no chunk starts there


@pytest.mark.parametrize("offline_reward", ["min", "model", "data"])
def test_offline_chunks_are_relabelled_as_unlabelled_data_online_chunks_keep_their_reward(offline_reward):
    agent = _agent(offline_reward, rnd_coef=0.0)
    batch = _batch(agent)
    batch["done"][:] = 1.0  # every chunk terminal in the data
    hl = agent.relabel(batch)
    online = batch["online"]
    assert torch.equal(hl["reward"][online], batch["chunk_reward"][online])
    assert hl["done"][online].eq(1).all()
    offline = ~online
    if offline_reward == "data":
        assert torch.equal(hl["reward"][offline], batch["chunk_reward"][offline]) and hl["done"][offline].eq(1).all()
    else:  # SUPE treats the dataset as unlabelled: neither its rewards nor its terminals are read
        assert hl["done"][offline].eq(0).all()
        if offline_reward == "min":
            assert torch.allclose(hl["reward"][offline], torch.full((8,), -1.0 * sum(0.99 ** k for k in range(H))))
        else:
            s0_u = torch.cat([hl["obs"][offline], hl["skill"][offline]], -1)
            assert torch.allclose(hl["reward"][offline], agent.reward_model(s0_u).squeeze(-1))
    # an offline chunk's skill is the encoder's mean read in it, squashed as the high level's actions are
    assert torch.allclose(hl["skill"][offline], agent.offline_labels[batch["start"][offline]])
    other = _agent(offline_reward, rnd_coef=2.0)
    other.skill_started, other.executed = agent.skill_started, agent.executed
    optimistic = other.relabel(batch)
    assert torch.allclose(optimistic["reward"] - hl["reward"], 2.0 * optimistic["bonus"], atol=1e-4)  # float32 at ~80
    assert (optimistic["bonus"] > 0).all()


def test_a_skill_is_held_for_h_steps_from_the_prior_first_then_from_the_policy():
    agent = _agent()
    agent.begin_episode()
    skills = []
    for _ in range(12):
        agent.explore(np.zeros(OBS))
        skills.append(agent.train_skill.z.clone())
    for start in (0, 4, 8):
        assert all(torch.equal(skills[start], skills[start + i]) for i in range(1, 4))
    assert not torch.equal(skills[0], skills[4]) and not torch.equal(skills[4], skills[8])
    assert agent.skill_started[:12].nonzero().flatten().tolist() == [0, 4, 8]
    assert torch.allclose(agent.executed[8], torch.tanh(skills[8][0]), atol=1e-6)
    assert agent.phase == "supe" and agent.update(_batch(agent)) != {}  # step 12: a skill's last step
    agent.explore(np.zeros(OBS))
    assert agent.update(_batch(agent)) == {}  # step 13: mid-skill, no high-level update (SUPE's cadence)
    fresh = _agent()
    fresh.explore(np.zeros(OBS))
    assert fresh.phase == "prior" and fresh.update(_batch(fresh)) == {}  # no update while skills come from the prior
    agent.begin_episode()
    assert agent.train_skill.z is None  # a new episode starts a new skill
    a1, _ = agent.act(np.zeros(OBS))
    a2, _ = agent.act(np.zeros(OBS))
    assert np.array_equal(a1, a2)  # deterministic evaluation, its own holder
    assert agent.train_skill.z is None


def test_checkpoint_resumes_bit_identically():
    agent = _agent()
    for _ in range(8):  # past the prior, at the end of a skill: the step on which updates run
        agent.explore(np.zeros(OBS))
    for seed in range(3):
        assert agent.update(_batch(agent, seed))
    buf = io.BytesIO()
    torch.save(agent.state_dict(), buf)
    buf.seek(0)
    clone = _agent(seed=7)  # other initial weights and generator: all it learns must come from the state
    clone.load_state_dict(torch.load(buf, weights_only=True))
    for seed in range(3, 6):
        m1, m2 = agent.update(_batch(agent, seed)), clone.update(_batch(clone, seed))
        assert m1 and m1.keys() == m2.keys() and all(torch.equal(m1[k], m2[k]) for k in m1)
    agent.begin_episode()
    clone.begin_episode()
    assert np.array_equal(agent.explore(np.ones(OBS))[0], clone.explore(np.ones(OBS))[0])


def test_the_paper_protocol_is_supes_settings_and_300k_steps():
    from spaars_robot.config.training import SUPEConfig

    cfg = resolve_config("supe-paper", {"task": "kitchen", "dataset": "x", "algo": "spaars-supe", "seed": 0})
    assert cfg.supe == SUPEConfig()  # the authors' settings are SUPEConfig's defaults; the protocol changes none
    assert (cfg.supe.gru_hidden, cfg.supe.gru_layers, cfg.supe.skill_steps, cfg.supe.high_hidden) == (
        256, 2, 1_000_000, (256, 256, 256))
    assert cfg.online.env_steps == 300_000
    assert cfg.online.transition.t_min < cfg.online.transition.t_max <= cfg.online.env_steps // 2


def test_the_prior_skill_space_centres_the_high_level_on_the_prior():
    """skill_space=prior: u = 0 is the prior's mean skill at the state, the map inverts (offline labels, executed
    prior skills), and a skill far out in SUPE's tanh space (|z| ~ 5, tanh = 0.9999) is an ordinary u in the prior's
    coordinates when the prior sits there (BENCHMARKS "Where the high level's skills land")."""
    from spaars_robot.algos.supe import action_from_skill, skill_from_action
    from spaars_robot.nn.skills import SkillVAE

    torch.manual_seed(0)
    skills = SkillVAE(OBS, ACT, 3, 4, (32, 32), gru_hidden=8, gru_layers=1, kl_weight=0.1)
    with torch.no_grad():  # a prior whose mean sits at z = 5 with spread 0.1, as the pretrained ones do
        last = skills.prior[-1]
        last.weight.zero_()
        last.bias.copy_(torch.cat([torch.full((3,), 5.0), torch.full((3,), -4.6)]))
    s = torch.randn(6, OBS)
    mean, std = skills.prior_dist(s)
    assert torch.allclose(mean, torch.full_like(mean, 5.0)) and (std < 0.2).all()
    torch.testing.assert_close(skill_from_action(skills, "prior", torch.zeros(6, 3), s), mean)
    u = torch.rand(6, 3) * 1.8 - 0.9
    for space in ("tanh", "prior"):
        z = skill_from_action(skills, space, u, s)
        torch.testing.assert_close(action_from_skill(skills, space, z, s), u, atol=1e-5, rtol=1e-5)
    data_skill = mean + std * 0.5  # a skill the data holds, half a prior std from the mean
    assert (action_from_skill(skills, "tanh", data_skill, s).abs() > 0.9999).all()
    assert (action_from_skill(skills, "prior", data_skill, s) - math.tanh(0.5)).abs().max() < 1e-5
