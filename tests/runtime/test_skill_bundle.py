"""SUPE / SPAARS-SUPE bundles (issue 18): the skill decoder, high-level policy, raw policy, gate and support monitor
in one graph, the skill held for H steps as per-client server state that `reset` restarts, and a gate that a
SUPE bundle (or SPAARS-SUPE before its switch) keeps shut. Exported for real, served over a real socket."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from spaars_robot.export.bundle import load_bundle
from spaars_robot.export.onnx_export import export_bundle
from spaars_robot.export.skill_clock import SkillClock
from spaars_robot.export.stack import random_skill_stack, stack_outputs
from spaars_robot.runtime.client import Client
from spaars_robot.runtime.decision import DecisionState
from spaars_robot.runtime.inference import PolicyRunner
from spaars_robot.runtime.server import ActionServer
from spaars_robot.runtime.sim_client import task_schema
from tests.runtime.runtime_helpers import ACT_DIM, OBS_DIM, hopper_info, serving

SKILL_DIM, HORIZON = 3, 4


@pytest.fixture(scope="module")
def skill_stack():
    return random_skill_stack(OBS_DIM, ACT_DIM, SKILL_DIM, HORIZON, seed=3)


@pytest.fixture(scope="module")
def skill_bundle(tmp_path_factory, skill_stack):
    def make(gated: bool):
        out = tmp_path_factory.mktemp("skill") / "bundle"
        export_bundle(skill_stack, hopper_info(algo="spaars-supe", skill_horizon=HORIZON,
                                               controller="gated" if gated else "latent",
                                               gate_threshold=-1e6), out)
        return load_bundle(out)
    return make


def test_manifest_and_graph_describe_the_skill_contract(skill_bundle):
    bundle = skill_bundle(True)
    m = bundle.manifest
    assert (m.skills.dim, m.skills.horizon) == (SKILL_DIM, HORIZON)
    graph = onnx.load(str(bundle.graph_path))
    assert [i.name for i in graph.graph.input] == ["obs", "skill", "choose_skill"]
    assert [o.name for o in graph.graph.output][-1] == "skill_out" and m.graph.output_names[-1] == "skill_out"
    assert set(m.parity.max_abs_error) == {*m.graph.output_names}
    assert max(m.parity.max_abs_error.values()) <= m.parity.atol


def test_skill_is_held_for_h_steps_and_rechosen_after_reset(skill_bundle, skill_stack):
    """onnxruntime through the server's runner and torch through the in-process reference, each with its own
    clock, agree step by step on a trajectory; the skill changes exactly every H steps and at a reset."""
    runner = PolicyRunner(skill_bundle(True), warmup=3)
    rng = np.random.default_rng(0)
    onnx_clock, torch_clock = runner.new_skill_clock(), SkillClock(SKILL_DIM, HORIZON)
    skills, latents = [], []
    for t in range(3 * HORIZON):
        obs = rng.standard_normal(OBS_DIM).astype(np.float32)
        _, latent, _, _ = runner(obs, onnx_clock)
        _, latent_ref, _, _ = stack_outputs(skill_stack, obs, torch_clock)
        np.testing.assert_allclose(latent, latent_ref, atol=1e-5)
        np.testing.assert_allclose(onnx_clock.skill, torch_clock.skill, atol=1e-5)
        skills.append(onnx_clock.skill.copy())
        latents.append(latent)
    changes = [t for t in range(1, len(skills)) if not np.allclose(skills[t], skills[t - 1])]
    assert changes == [HORIZON, 2 * HORIZON]
    assert onnx_clock.choices == 3
    onnx_clock.reset()
    assert onnx_clock.due
    runner(obs, onnx_clock)  # the reset's first step chooses from this observation, not from the held skill
    assert not np.allclose(onnx_clock.skill, skills[-1])


def test_the_gate_stays_shut_when_the_bundle_deploys_the_decoder_alone(skill_bundle):
    shut = DecisionState.for_bundle(skill_bundle(False).manifest)
    open_ = DecisionState.for_bundle(skill_bundle(True).manifest)
    assert shut.decide(1e9, 0.0).source == "latent"
    assert open_.decide(1e9, 0.0).source == "raw"


def test_served_over_zeromq_the_skill_is_per_client_and_reset_restarts_it(skill_bundle):
    from spaars_robot.config.tasks import load_task

    bundle = skill_bundle(False)
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal(OBS_DIM).astype(np.float32) for _ in range(2))
    schema = task_schema(load_task("hopper"))
    with serving(ActionServer(bundle, ["tcp://127.0.0.1:*"])) as server:
        endpoint = server.bound[0]
        with Client(endpoint, schema) as first, Client(endpoint, schema) as second:
            first.connect()
            second.connect()
            held = [first.act(a).action]  # step 0 chooses the skill at a ...
            held += [first.act(b).action for _ in range(HORIZON - 1)]  # ... which acts on b for the rest of H
            fresh = second.act(b).action  # another client's first step chooses at b
            assert all(r.source == "latent" for r in (first.act(b), second.act(b)))
            assert not np.allclose(held[1], fresh, atol=1e-6)
            first.reset()
            np.testing.assert_allclose(first.act(b).action, fresh, atol=1e-6)  # after reset: chosen at b


def test_the_exported_skill_map_is_training_s():
    import torch

    from spaars_robot.algos.supe import skill_of
    from spaars_robot.export.stack import exportable_skill_of

    mu = torch.linspace(-12.0, 12.0, 4001, dtype=torch.float64)  # float64: training's map without rounding noise
    torch.testing.assert_close(exportable_skill_of(mu), skill_of(torch.tanh(mu)), atol=1e-6, rtol=1e-6)


def test_kitchen_skill_bundle_sim_to_sim(tmp_path):
    """A kitchen-sized SPAARS-SUPE bundle served over ZeroMQ under safety/kitchen.yaml and the same stack in torch,
    in-process, play the same seeded episodes alike: same sources, same returns; the reset between episodes
    restarts the skill on both sides (a server that kept it would diverge in the second episode)."""
    from spaars_robot.config.tasks import load_task
    from spaars_robot.runtime.sim_client import InProcessPolicy, run_sim
    from spaars_robot.safety.limits import SafetyLayer
    from spaars_robot.safety.spec import load_safety_spec

    kitchen = load_task("kitchen")
    stack = random_skill_stack(kitchen.obs_dim, kitchen.action_dim, 8, HORIZON, seed=5)
    info = hopper_info(task="kitchen", obs_dim=kitchen.obs_dim, action_dim=kitchen.action_dim, control_rate_hz=12.5,
                       algo="spaars-supe", skill_horizon=HORIZON, gate_threshold=0.0,
                       calibration_obs=(0.1 * np.random.default_rng(2).standard_normal((16, kitchen.obs_dim))).tolist())
    export_bundle(stack, info, tmp_path / "kitchen")
    bundle = load_bundle(tmp_path / "kitchen")
    layer = SafetyLayer(load_safety_spec("kitchen"), kitchen.action_dim, kitchen.obs_dim)
    with serving(ActionServer(bundle, ["tcp://127.0.0.1:*"], safety=layer)) as server:
        with Client(server.bound[0], task_schema(kitchen), timeout_s=2.0) as client:
            served = run_sim(client, kitchen, episodes=2, seed=7, realtime=False, max_steps=3 * HORIZON + 1)
    layer = SafetyLayer(load_safety_spec("kitchen"), kitchen.action_dim, kitchen.obs_dim)
    local = run_sim(InProcessPolicy(stack, bundle.manifest, layer), kitchen, episodes=2, seed=7, realtime=False,
                    max_steps=3 * HORIZON + 1)
    for a, b in zip(served.episodes, local.episodes, strict=True):
        assert a.steps == b.steps == 3 * HORIZON + 1 and a.sources == b.sources
        assert a.episode_return == pytest.approx(b.episode_return, abs=1e-6)
    assert served.limit_counts == local.limit_counts


def test_a_prior_space_bundle_serves_the_skill_training_chose(tmp_path):
    """supe.skill_space=prior: the exported graph chooses z = mu_p(s) + sigma_p(s) atanh(u) as the agent does
    (algos/supe.skill_from_action on the high level's mean), onnxruntime agrees with torch, and the chosen skill is
    not the tanh space's (a graph that ignored the space would serve other skills than training evaluated)."""
    import torch

    from spaars_robot.algos.supe import skill_from_action

    stack = random_skill_stack(OBS_DIM, ACT_DIM, SKILL_DIM, HORIZON, seed=4, skill_space="prior")
    export_bundle(stack, hopper_info(algo="supe", skill_horizon=HORIZON, controller="latent"), tmp_path / "b")
    runner = PolicyRunner(load_bundle(tmp_path / "b"), warmup=1)
    clock, torch_clock = runner.new_skill_clock(), SkillClock(SKILL_DIM, HORIZON)
    obs = np.random.default_rng(1).standard_normal(OBS_DIM).astype(np.float32)
    _, latent, _, _ = runner(obs, clock)
    _, latent_ref, _, _ = stack_outputs(stack, obs, torch_clock)
    np.testing.assert_allclose(latent, latent_ref, atol=1e-5)
    with torch.no_grad():
        s = stack.normalizer(torch.as_tensor(obs).unsqueeze(0))
        trained = skill_from_action(stack.skills, "prior", stack.high_policy.mean_action(s), s)[0].numpy()
        tanh_space = skill_from_action(stack.skills, "tanh", stack.high_policy.mean_action(s), s)[0].numpy()
    np.testing.assert_allclose(clock.skill, trained, atol=1e-4)
    assert np.abs(trained - tanh_space).max() > 1e-2
