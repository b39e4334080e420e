"""SPAARS-SUPE's additions to SUPE on hand-built data: per-step transitions inside chunks, the per-step gate on a
hand-built critic, concurrent BC onto the decoded skill actions, the switch, and an exact checkpoint."""
from __future__ import annotations

import io

import numpy as np
import torch
from torch import nn

from spaars_robot.algos.spaars_supe import SPAARSSUPEAgent, per_step
from spaars_robot.config.training import resolve_config
from spaars_robot.data.chunks import mixed_chunk_batch
from spaars_robot.data.replay import ReplayBuffer

OBS, ACT, H = 5, 2, 4


def _buffers() -> tuple[ReplayBuffer, ReplayBuffer]:
    g = torch.Generator().manual_seed(0)
    buffers = []
    for _ in range(2):
        buf = ReplayBuffer(40, OBS, ACT)
        for t in range(30):
            buf.add(torch.randn(OBS, generator=g), torch.rand(ACT, generator=g) * 2 - 1, float(t % 3),
                    torch.randn(OBS, generator=g), t == 29)
        buffers.append(buf)
    return buffers[0], buffers[1]


def _agent(seed: int = 0, sets: tuple[str, ...] = ()) -> SPAARSSUPEAgent:
    from spaars_robot.algos.offline import OfflineNets
    from spaars_robot.nn.skills import SkillVAE
    from spaars_robot.train.skills_offline import label_offline_chunks

    config = resolve_config("smoke", {"task": "hopper", "dataset": "unused", "algo": "spaars-supe", "seed": seed},
                            ["supe.prior_steps=3", "supe.horizon=4", *sets])
    torch.manual_seed(0)  # the frozen parts (pretraining, skills) the same for every seed, as the cache makes them
    nets = OfflineNets(OBS, ACT, config.pretrain)
    skills = SkillVAE.from_config(OBS, ACT, config.supe).requires_grad_(False)
    labels = label_offline_chunks(skills, _buffers()[0], torch.arange(0, 8))
    return SPAARSSUPEAgent(nets, skills, config, torch.Generator().manual_seed(seed), -1.0, labels, "model")


def _batch(agent: SPAARSSUPEAgent, seed: int = 0) -> dict[str, torch.Tensor]:
    if not agent.skill_started.any():
        agent.skill_started[0:24:4] = True
        agent.executed[0:24:4] = torch.linspace(-0.5, 0.5, 6).unsqueeze(-1)
    offline, online = _buffers()
    return mixed_chunk_batch(offline, torch.arange(0, 8), online, H, 0.99, 16, 0.5,
                             torch.Generator().manual_seed(seed), online_start_mask=agent.skill_started)


def test_per_step_transitions_inside_chunks_follow_each_other():
    batch = _batch(_agent())
    steps = per_step(batch)
    assert steps["obs"].shape == (16 * H, OBS)
    obs = steps["obs"].reshape(16, H, OBS)
    nxt = steps["next_obs"].reshape(16, H, OBS)
    assert torch.equal(nxt[:, :-1], obs[:, 1:]) and torch.equal(nxt[:, -1], batch["next_obs"])
    assert steps["done"].reshape(16, H)[:, :-1].eq(0).all()
    assert torch.equal(steps["done"].reshape(16, H)[:, -1], batch["done"])


class HandCritic(nn.Module):
    """Q_i(s, a) = -||a - best||^2 + i * 1e-3: every member agrees which action is better."""

    def __init__(self, best: torch.Tensor, members: int = 4) -> None:
        super().__init__()
        self.best, self.members = best, members

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        q = -(action - self.best).pow(2).sum(-1)
        return torch.stack([q + i * 1e-3 for i in range(self.members)])


def test_the_per_step_gate_executes_raw_only_where_the_critic_prefers_it():
    agent = _agent(sets=("online.gate.hysteresis_rel=0.0", "online.gate.tau_rel=0.0"))
    for _ in range(5):  # steps 5-8 share one skill: the next two explores keep it
        agent.explore(np.zeros(OBS))
    agent.phase = "gated"
    s = agent._s(np.zeros(OBS))
    raw = agent.raw_policy.mean_action(s)[0].clone()
    decoded = agent.skills.decode_mean(s, agent.train_skill.z)[0].clone()
    assert not torch.allclose(raw, decoded)
    sources = []
    for best in (raw, decoded):
        agent.q_lo = HandCritic(best)
        agent.gate.reset()
        sources.append(agent.explore(np.zeros(OBS))[1])
    assert sources == ["raw", "latent"]
    agent.q_lo = HandCritic(raw)
    agent.begin_episode(evaluation=True)
    assert agent.act(np.zeros(OBS))[1] == "raw"  # the deployed policy gates the same way


def test_concurrent_bc_pulls_the_raw_policy_onto_the_decoded_skill_actions():
    agent = _agent()
    for _ in range(8):
        agent.explore(np.zeros(OBS))
    errors = [float(agent.update(_batch(agent, seed))["spaars_supe/raw_bc_error"]) for seed in range(60)]
    assert agent.phase == "latent" and np.mean(errors[-10:]) < 0.5 * np.mean(errors[:5])
    ablated = _agent(sets=("online.concurrent_bc=false",))
    for _ in range(8):
        ablated.explore(np.zeros(OBS))
    before = [p.clone() for p in ablated.raw_policy.parameters()]
    for seed in range(5):
        ablated.update(_batch(ablated, seed))
    assert all(torch.equal(a, b) for a, b in zip(before, ablated.raw_policy.parameters()))


def test_the_switch_is_logged_and_checkpoints_resume_exactly():
    agent = _agent()
    for _ in range(8):
        agent.explore(np.zeros(OBS))
    recent = torch.randn(32, OBS)
    signals = agent.after_eval(400, {"return_mean": 1.0}, recent)  # smoke: t_max 400 forces the switch
    assert agent.phase == "gated" and "t_max" in signals["switched"] and agent.run_summary()["switch"]
    for seed in range(2):
        agent.update(_batch(agent, seed))
    buf = io.BytesIO()
    torch.save(agent.state_dict(), buf)
    buf.seek(0)
    clone = _agent(seed=5)
    clone.load_state_dict(torch.load(buf, weights_only=False))
    assert clone.phase == "gated" and clone.run_summary() == agent.run_summary()
    for seed in range(2, 4):
        m1, m2 = agent.update(_batch(agent, seed)), clone.update(_batch(clone, seed))
        assert m1 and all(torch.equal(m1[k], m2[k]) for k in m1)
