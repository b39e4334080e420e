"""The rollout-supervised gate (issue 16): its predictor, its fit, `gate fit` on a real run, export and serving."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from spaars_robot.algos.rollout_gate import episode_folds, fit_neighbour_gate, gate_features
from spaars_robot.export.bundle import load_bundle
from spaars_robot.export.rollout_gate_file import GATE_FILE, load_rollout_gate, save_rollout_gate
from spaars_robot.export.session import make_session
from spaars_robot.nn.neighbour_gate import NeighbourGate, neighbour_bandwidth, reference_predict
from spaars_robot.train.branching import collect_states, gate_inputs, load_gated_agent
from tests.conftest import REPO, run_cli


def test_the_torch_gate_predicts_what_the_numpy_reference_does_and_round_trips():
    rng = np.random.default_rng(0)
    x, y, test = rng.normal(size=(200, 7)), rng.normal(size=200), rng.normal(size=(50, 7)) * 1.5
    width = neighbour_bandwidth(x, 9)
    gate = NeighbourGate(torch.as_tensor(x), torch.as_tensor(y), width)
    with torch.no_grad():
        got = gate(torch.as_tensor(test, dtype=torch.float32)).numpy()
        far = gate(torch.full((1, 7), 1e3)).numpy()  # every kernel weight underflows: still the nearest state's mean
    np.testing.assert_allclose(got, reference_predict(x, y, test, width), atol=1e-5)
    assert np.isfinite(far).all() and far[0] == pytest.approx(reference_predict(x, y, np.full((1, 7), 1e3), width)[0],
                                                              abs=1e-4)
    # a narrow kernel is the nearest state's value, a wide one the mean of all
    assert reference_predict(x, y, x[:5], 1e-3) == pytest.approx(y[:5])
    assert reference_predict(x, y, x[:5], 1e3) == pytest.approx(np.full(5, y.mean()), abs=1e-3)
    assert neighbour_bandwidth(x, 1) < neighbour_bandwidth(x, 9) < neighbour_bandwidth(x, 45)
    again = NeighbourGate.from_payload(gate.payload())
    assert again.bandwidth == width and again.offset == 0.0 and torch.equal(again.points, gate.points) and torch.equal(again.values, gate.values)
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        NeighbourGate(torch.as_tensor(x), torch.as_tensor(y), 0.0)
    with pytest.raises(ValueError, match=r"values \[N\]"):
        NeighbourGate(torch.as_tensor(x), torch.as_tensor(y[:10]), 1.0)


def test_the_fit_finds_a_local_sign_a_constant_gate_cannot_and_keeps_episodes_whole():
    rng = np.random.default_rng(1)
    episodes = np.repeat(np.arange(30), 20)
    x = rng.normal(size=(600, 4))
    truth = np.where(np.linalg.norm(x[:, :2], axis=1) < 1.1, 1.0, -1.0)  # raw better inside a disc only
    y = truth + 0.3 * rng.normal(size=600)
    significant = np.abs(y) > 0.5
    fold = episode_folds(episodes, 5)
    assert all(len(set(fold[episodes == e])) == 1 for e in range(30)) and set(fold) == set(range(5))
    gate, record = fit_neighbour_gate(x, y, significant, episodes, folds=5, neighbours=(1, 5, 15))
    gains = record["cross_validated_gain"]
    assert record["choice"].startswith("k=") and gains[record["choice"]] == max(gains.values())
    assert gains[record["choice"]] > 0.2 > gains["always_latent"] == 0.0 > gains["always_raw"]  # raw inside the disc: ~45 % of states
    assert record["cross_validated_sign"][str(record["k"])]["sign_accuracy"] > 0.75  # a constant: ~0.55
    assert gate.bandwidth == record["bandwidth"] and gate.offset == pytest.approx(record["margin"])
    fresh = rng.normal(size=(300, 4))
    with torch.no_grad():
        says_raw = (gate(torch.as_tensor(fresh, dtype=torch.float32)) > 0).numpy()
    assert (says_raw == (np.linalg.norm(fresh[:, :2], axis=1) < 1.1)).mean() > 0.85
    with pytest.raises(ValueError, match="episodes for 5 folds"):
        fit_neighbour_gate(x[:40], y[:40], significant[:40], episodes[:40], folds=5)


@pytest.mark.parametrize("shift, expected", [(-2.0, "always_latent"), (+2.0, "always_raw")])
def test_when_the_state_carries_nothing_the_fit_deploys_the_better_constant(shift, expected):
    """Differences that do not depend on the state: no width beats the better constant held out, so that constant
    is the gate (its graph says raw, or latent, everywhere)."""
    rng = np.random.default_rng(2)
    x, episodes = rng.normal(size=(300, 4)), np.repeat(np.arange(15), 20)
    y = shift + rng.normal(size=300)
    gate, record = fit_neighbour_gate(x, y, np.abs(y) > 1.0, episodes, folds=5)
    assert record["choice"] == expected and record["k"] is None
    with torch.no_grad():
        out = gate(torch.as_tensor(rng.normal(size=(50, 4)) * 3, dtype=torch.float32)).numpy()
    assert ((out > 0) == (expected == "always_raw")).all()


def test_gate_features_are_what_the_robot_has():
    obs, raw, lat = torch.zeros(3, 5), torch.ones(3, 2), torch.full((3, 2), 0.5)
    features = gate_features(obs, raw, lat)
    assert features.shape == (3, 5 + 2 * 3) and torch.equal(features[:, 9:11], raw - lat)


@pytest.fixture(scope="module")
def fitted_run(tiny_hopper_dataset, tmp_path_factory):
    """A SPAARS smoke run with SPAR's raw controller (the case whose raw action is not nets.raw_policy), fitted."""
    root = tmp_path_factory.mktemp("rollout-gate")
    env = {"SPAARS_CACHE": str(root / "cache")}
    run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--algo", "spaars", "--protocol",
            "smoke", "--safety-spec", "none", "--set", "online.raw_init=spar", "--runs-root", str(root / "runs"),
            env=env)
    (run_dir,) = (root / "runs").glob("hopper-spaars-set-*-smoke/seed0")
    proc = run_cli("gate", "fit", str(run_dir), "--states", "60", "--stride", "4", "--repeats", "2", "--horizon",
                   "10", "--episodes", "3", "--out", str(root / "report.json"))
    return root, run_dir, proc


def test_gate_fit_branches_fits_and_compares_the_controllers_on_a_real_run(fitted_run):
    root, run_dir, proc = fitted_run
    assert "cross-validated gain" in proc.stdout and "rollout_gate" in proc.stdout
    report = json.loads((run_dir / "rollout_gate.json").read_text())
    assert report == json.loads((root / "report.json").read_text())
    fit = report["fit"]
    assert fit["states"] == 60 and fit["episodes"] >= 5 and fit["choice"] in fit["cross_validated_gain"]
    assert 0 <= fit["significant_states"] <= 60 and 0.0 <= fit["fitted_raw_rate"] <= 1.0
    assert all(v["scored"] == fit["significant_states"] for v in fit["cross_validated_sign"].values())
    per_state = fit["per_state"]  # the truth is kept, so another selection rule needs no new rollouts
    assert len(per_state["difference"]) == len(per_state["p_value"]) == len(per_state["episode"]) == 60
    assert fit["significant_states"] == sum(p < 0.05 for p in per_state["p_value"])
    assert fit["cross_validated_gain"]["always_raw"] == pytest.approx(np.mean(per_state["difference"]), abs=1e-5)
    scores = report["evaluation"]["controllers"]
    assert set(scores) == {"critic_gate", "rollout_gate", "raw", "latent"}
    assert scores["raw"]["raw_rate"] == 1.0 and scores["latent"]["raw_rate"] == 0.0
    assert all(len(s["normalized"]) == 3 for s in scores.values())
    for other, diff in report["evaluation"]["rollout_gate_minus"].items():  # paired on the same seeds
        expected = np.mean(scores["rollout_gate"]["normalized"]) - np.mean(scores[other]["normalized"])
        assert diff["mean"] == pytest.approx(expected) and diff["ci95"][0] <= diff["mean"] <= diff["ci95"][1]


def test_the_product_loader_sees_what_the_diagnostic_sees(fitted_run, monkeypatch):
    """`gate fit` rebuilds the agent from the checkpoint alone; the diagnostic builds it through the pretraining
    cache. Both must give the gate the same raw action and LCB, or the diagnostic would score another gate."""
    root, run_dir, _ = fitted_run
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gate_accuracy

    config, task, agent, nets, layer = load_gated_agent(run_dir)
    _, _, built, _ = gate_accuracy.load_agent(run_dir, root / "cache")
    states = gate_accuracy.collect_states(agent, task, 8, 3, layer, seed_base=7)
    with torch.no_grad():
        mine = gate_inputs(agent, nets, states, config.online.gate.kappa)
        theirs = gate_inputs(built.agent, built.nets, states, config.online.gate.kappa)
    assert torch.equal(mine.raw, theirs.raw) and torch.allclose(mine.lcb, theirs.lcb, atol=1e-6)


@pytest.mark.parametrize("form", ["fitted", "kernel"])
def test_export_deploys_the_fitted_gate_and_the_runtime_serves_it(fitted_run, tmp_path, form):
    """The gate the fit chose (on a smoke run often a constant), and a kernel gate with a margin on the same states
    (the graph's other path), each exported, held to torch, and served."""
    root, fitted_dir, _ = fitted_run
    run_dir = tmp_path / "seed0"
    shutil.copytree(fitted_dir, run_dir)
    if form == "kernel":
        fitted, record = load_rollout_gate(run_dir)
        values = torch.as_tensor(np.random.default_rng(4).normal(size=fitted.values.shape[0]), dtype=torch.float32)
        kernel = NeighbourGate(fitted.fitted, values, neighbour_bandwidth(fitted.fitted.numpy(), 5), offset=0.1)
        save_rollout_gate(run_dir, kernel, record)
    out = tmp_path / "bundle"
    run_cli("export", str(run_dir), "--gate", "rollout", "--out", str(out))
    manifest = load_bundle(out).manifest
    assert (manifest.gate.form, manifest.gate.threshold, manifest.gate.hysteresis) == ("rollout_neighbours", 0.0, 0.0)
    assert manifest.gate.controller == "gated"
    report = json.loads((run_dir / "rollout_gate.json").read_text())
    assert manifest.gate.fit["choice"] == report["fit"]["choice"] and "per_state" not in manifest.gate.fit
    # the graph's gate output has the sign of the fitted gate's prediction at the agent's own features
    config, task, agent, nets, layer = load_gated_agent(run_dir)
    gate, _ = load_rollout_gate(run_dir)
    obs = np.stack([s.obs for s in collect_states(agent, task, 32, 2, layer, seed_base=11)]).astype(np.float32)
    session = make_session(load_bundle(out).graph_path)
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"obs": obs})))
    with torch.no_grad():
        s = nets.normalizer(torch.as_tensor(obs))
        raw, lat = agent.raw_policy.mean_action(s), nets.decoded_latent_mean(s)
        predicted = gate(gate_features(s, raw, lat)).numpy()
    np.testing.assert_allclose(outputs["raw_action"], raw.numpy(), atol=1e-5)
    decided = np.abs(predicted) > 1e-4  # exact ties at 0 are float noise either way
    assert np.array_equal((outputs["gate_advantage"] > 0)[decided], (predicted > 0)[decided])
    proc = run_cli("demo", "--bundle", str(out), "--episodes", "1", env={"COLUMNS": "200", **os.environ})
    assert "normalised score" in proc.stdout and "server stopped cleanly (exit 0)" in proc.stdout


def test_a_missing_tampered_or_stale_gate_file_is_refused_and_left_as_it_is(fitted_run, tmp_path):
    root, run_dir, _ = fitted_run
    copy = tmp_path / "seed0"
    shutil.copytree(run_dir, copy)
    (copy / GATE_FILE).unlink()
    proc = run_cli("export", str(copy), "--gate", "rollout", "--out", str(tmp_path / "a"), check=False)
    assert proc.returncode != 0 and "spaars-robot gate fit" in proc.stderr + proc.stdout
    shutil.copy(run_dir / GATE_FILE, copy / GATE_FILE)
    payload = torch.load(copy / GATE_FILE, weights_only=True)
    payload["checkpoint_sha256"] = "0" * 64  # fitted on another checkpoint (the run resumed since, say)
    torch.save(payload, copy / GATE_FILE)
    proc = run_cli("export", str(copy), "--gate", "rollout", "--out", str(tmp_path / "b"), check=False)
    assert proc.returncode != 0 and "fitted on another checkpoint" in proc.stderr + proc.stdout
    data = (run_dir / GATE_FILE).read_bytes()
    (copy / GATE_FILE).write_bytes(data[: len(data) // 2])
    proc = run_cli("export", str(copy), "--gate", "rollout", "--out", str(tmp_path / "c"), check=False)
    assert proc.returncode != 0 and "unreadable rollout gate" in proc.stderr + proc.stdout
    assert (copy / GATE_FILE).read_bytes() == data[: len(data) // 2]  # refused, never rewritten
    assert not (tmp_path / "c").exists()
    bad = run_cli("gate", "fit", str(copy), "--repeats", "1", check=False)
    assert bad.returncode != 0 and "--repeats" in bad.stderr + bad.stdout
    checkpoint = (copy / "checkpoint.pt").read_bytes()
    (copy / "checkpoint.pt").write_bytes(checkpoint[:1000])  # a crash mid-copy, say
    bad = run_cli("gate", "fit", str(copy), check=False)
    assert bad.returncode != 0 and "checkpoint unreadable" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr + bad.stdout and (copy / "checkpoint.pt").read_bytes() == checkpoint[:1000]


def test_the_diagnostic_scores_the_fitted_gate_on_its_own_held_out_truth(fitted_run, tmp_path):
    root, run_dir, _ = fitted_run
    result = tmp_path / "diagnostic.json"
    script = str(REPO / "benchmarks" / "gate_accuracy.py")
    subprocess.run([sys.executable, script, str(run_dir), "--cache-dir", str(root / "cache"), "--states", "12",
                    "--stride", "5", "--horizon", "15", "--repeats", "3", "--out", str(result)], check=True,
                   capture_output=True, text=True, timeout=300, cwd=REPO)
    subprocess.run([sys.executable, script, "--cache-dir", str(root / "cache"), "--add-rollout-gate", str(result)],
                   check=True, capture_output=True, text=True, timeout=300, cwd=REPO)
    written = json.loads(result.read_text())
    scored, per_state = written["rollout_gate"], written["per_state"]
    prediction = np.asarray(per_state["rollout_gate_prediction"])
    assert len(prediction) == 12 and scored["open_rate"] == pytest.approx((prediction > 0).mean())
    significant = [i for i, p in enumerate(per_state["p_value"]) if p < 0.05]
    right = [(prediction[i] > 0) == (per_state["true_difference"][i] > 0) for i in significant]
    assert scored["sign_accuracy"] == (pytest.approx(sum(right) / len(right)) if right else None)
    assert scored["fit"]["choice"] == json.loads((run_dir / "rollout_gate.json").read_text())["fit"]["choice"]


def test_dagger_rounds_branch_the_fitted_gates_own_states_and_refit_on_all(fitted_run, tmp_path):
    """Round 1 is the one-round fit (same seeds, same truth); round 2 plays round 1's gate on fresh episodes, and the
    saved gate is the one fitted on both rounds' states."""
    root, run_dir, _ = fitted_run
    copy = tmp_path / "seed0"
    shutil.copytree(run_dir, copy)
    run_cli("gate", "fit", str(copy), "--states", "40", "--stride", "4", "--repeats", "2", "--horizon", "10",
            "--episodes", "3", "--rounds", "2")
    report = json.loads((copy / "rollout_gate.json").read_text())
    fit, one_round = report["fit"], json.loads((root / "report.json").read_text())["fit"]
    assert fit["states"] == 80 and [r["collected_under"] for r in fit["rounds"]] == ["critic_gate", "rollout_gate"]
    per_state = fit["per_state"]
    assert per_state["round"] == [1] * 40 + [2] * 40
    assert per_state["difference"][:40] == one_round["per_state"]["difference"][:40]  # round 1: the same truth
    assert not set(per_state["episode"][:40]) & set(per_state["episode"][40:])  # round 2: episodes of its own
    assert sum(r["states"] for r in fit["rounds"]) == 80
    assert fit["rounds"][1]["significant_states"] == sum(p < 0.05 for p in per_state["p_value"][40:])
    saved, _ = load_rollout_gate(copy)
    assert saved.fitted.shape[0] == 80  # refitted on every round's states
    played = report["evaluation"]["controllers"]["rollout_gate"]["normalized_mean"]
    assert played == pytest.approx(fit["rounds"][-1]["normalized_mean"])  # the saved gate is the last round's


def test_select_by_return_plays_every_candidate_and_deploys_the_best(fitted_run, tmp_path):
    root, run_dir, _ = fitted_run
    copy = tmp_path / "seed0"
    shutil.copytree(run_dir, copy)
    bad = run_cli("gate", "fit", str(copy), "--select", "loss", check=False)
    assert bad.returncode != 0 and "--select" in bad.stderr + bad.stdout and "Traceback" not in bad.stderr
    run_cli("gate", "fit", str(copy), "--states", "40", "--stride", "4", "--repeats", "2", "--horizon", "10",
            "--episodes", "3", "--select", "return", "--selection-episodes", "2")
    fit = json.loads((copy / "rollout_gate.json").read_text())["fit"]
    returns = fit["selection_return"]
    assert set(returns) == set(fit["cross_validated_gain"])  # both constants and every width x margin, played
    best = max(returns.values())
    assert returns[fit["choice"]] == best and fit["choice"] == next(n for n, v in returns.items() if v == best)
    assert fit["gain_choice"] == max(fit["cross_validated_gain"], key=fit["cross_validated_gain"].get)
    assert fit["rounds"][0]["gain_choice"] == fit["gain_choice"] and fit["rounds"][0]["choice"] == fit["choice"]
    saved, record = load_rollout_gate(copy)
    if fit["choice"].startswith("always_"):
        assert set(saved.values.tolist()) == {1.0 if fit["choice"] == "always_raw" else -1.0}
    else:
        assert record["k"] == int(fit["choice"].split()[0].split("=")[1]) and saved.bandwidth == record["bandwidth"]


def test_the_startup_benchmark_plays_what_gate_fit_plays(fitted_run, tmp_path):
    """benchmarks/gate_startup.py's critic gate and its 0-step schedule (always raw) are gate fit's controllers."""
    root, run_dir, _ = fitted_run
    out = tmp_path / "startup.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "gate_startup.py"), str(run_dir), "--episodes", "3",
                    "--heads", "0,5", "--out", str(out)], check=True, capture_output=True, text=True, timeout=300,
                   cwd=REPO, env={**os.environ, "MUJOCO_GL": "egl"})
    result = json.loads(out.read_text())
    played = json.loads((root / "report.json").read_text())["evaluation"]["controllers"]
    assert result["critic_gate"]["normalized"] == pytest.approx(played["critic_gate"]["normalized"])
    assert result["schedules"]["0"]["normalized"] == pytest.approx(played["raw"]["normalized"])
    lengths, latent = result["critic_gate"]["lengths"], result["critic_gate"]["latent_steps"]
    assert all(0 <= s < n for steps, n in zip(latent, lengths, strict=True) for s in steps)
    assert result["critic_gate"]["latent_share"] == pytest.approx(sum(map(len, latent)) / sum(lengths))


def test_a_negative_margin_opens_the_gate_unless_raw_is_predicted_clearly_worse():
    """'raw unless clearly worse' (hopper seed 0's best controller was raw everywhere but the start) is a candidate."""
    from spaars_robot.algos.rollout_gate import candidate_gate

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = np.where(x[:, 0] > 1.0, -3.0, -0.1)  # slightly worse almost everywhere, much worse in one region
    query = torch.as_tensor(np.array([[-1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]), dtype=torch.float32)
    closed, _ = candidate_gate(x, y, "k=15 margin=0")
    opened, parameters = candidate_gate(x, y, "k=15 margin=-0.25")
    assert parameters["margin"] == pytest.approx(-0.25 * y.std()) and opened.offset == parameters["margin"]
    assert (closed(query) > 0).tolist() == [False, False]
    assert (opened(query) > 0).tolist() == [True, False]  # raw where it is only slightly worse, latent where costly
    bad = run_cli("gate", "fit", "/nonexistent", "--margins", "0,x", check=False)
    assert bad.returncode != 0 and "--margins" in bad.stderr + bad.stdout and "Traceback" not in bad.stderr


def test_a_lead_keeps_each_branchs_controller_for_its_steps_then_hands_to_the_deployed_policy(fitted_run):
    """lead_steps = horizon is a whole branch under one controller; lead_steps = 1 is the one-action branch."""
    from spaars_robot.envs import make_env
    from spaars_robot.train.branching import branch_return
    from spaars_robot.train.gate_fit import set_controller

    _, run_dir, _ = fitted_run
    config, task, agent, nets, layer = load_gated_agent(run_dir)
    state = collect_states(agent, task, 3, 4, layer, seed_base=123)[-1]
    seen = gate_inputs(agent, nets, [state], config.online.gate.kappa)
    env = make_env(task)

    def branch(first, **lead):
        return branch_return(env, agent, state.qpos, state.qvel, first[0].detach().numpy(), 12, 0.99, 0.1, 7, layer,
                             state.safety, state.obs, **lead)

    one_action = branch(seen.raw)
    assert branch(seen.raw, lead="raw", lead_steps=1) == one_action
    led = {name: branch(first, lead=name, lead_steps=12) for first, name in ((seen.raw, "raw"), (seen.lat, "latent"))}
    for name in ("raw", "latent"):  # the same as the constant controller deployed for the whole horizon
        set_controller(agent, name, None)
        assert branch(seen.raw if name == "raw" else seen.lat) == led[name]
    set_controller(agent, "critic_gate", None)
    env.close()
    assert led["raw"] != led["latent"]
    bad = run_cli("gate", "fit", str(run_dir), "--lead-steps", "20", "--horizon", "10", check=False)
    assert bad.returncode != 0 and "lead_steps" in bad.stderr + bad.stdout and "Traceback" not in bad.stderr


def test_gate_fit_with_a_lead_measures_other_differences_on_the_same_states(fitted_run, tmp_path):
    root, run_dir, _ = fitted_run
    copy = tmp_path / "seed0"
    shutil.copytree(run_dir, copy)
    run_cli("gate", "fit", str(copy), "--states", "60", "--stride", "4", "--repeats", "2", "--horizon", "10",
            "--episodes", "3", "--lead-steps", "5")
    fit, one_step = (json.loads(p.read_text())["fit"] for p in (copy / "rollout_gate.json", root / "report.json"))
    assert fit["settings"]["lead_steps"] == 5 and one_step["settings"]["lead_steps"] == 1
    assert fit["per_state"]["episode"] == one_step["per_state"]["episode"]  # the same states were branched
    assert fit["per_state"]["difference"] != one_step["per_state"]["difference"]


def test_a_held_gate_decides_every_n_steps_of_an_episode_and_export_carries_the_hold(fitted_run, tmp_path):
    """With hold_steps N the rollout gate is asked at steps 0, N, 2N, ... of each episode and its answer executed in
    between; a new episode asks afresh. The exported manifest carries N, so the runtime holds as gate fit played."""
    from spaars_robot.envs import make_env
    from spaars_robot.runtime.decision import DecisionState
    from spaars_robot.train.gate_fit import set_controller

    _, run_dir, _ = fitted_run
    config, task, agent, nets, layer = load_gated_agent(run_dir)
    fitted, record = load_rollout_gate(run_dir)
    asked: list[int] = []

    class Alternating(torch.nn.Module):  # raw, latent, raw, ... one answer per question
        def forward(self, features):
            asked.append(len(asked))
            return torch.full((features.shape[0],), 1.0 if len(asked) % 2 else -1.0)

    set_controller(agent, "rollout_gate", Alternating(), hold_steps=3)
    env = make_env(task)
    sources = []
    for episode in range(2):
        obs, _ = env.reset(seed=episode)
        agent.begin_episode(evaluation=True)
        for _ in range(7):
            action, source = agent.act(obs)
            sources.append(source)
            obs, *_ = env.step(action)
    env.close()
    one_episode = ["raw"] * 3 + ["latent"] * 3 + ["raw"]
    assert sources[:7] == one_episode and len(asked) == 6  # 3 questions per 7-step episode
    # asked afresh at the new episode's first step (answer 4: latent), not carrying episode 1's last raw decision
    assert sources[7:] == ["latent"] * 3 + ["raw"] * 3 + ["latent"]
    copy = tmp_path / "seed0"
    shutil.copytree(run_dir, copy)
    save_rollout_gate(copy, fitted, {**record, "settings": {**record["settings"], "hold_steps": 3}})
    run_cli("export", str(copy), "--gate", "rollout", "--out", str(tmp_path / "bundle"))
    held = load_bundle(tmp_path / "bundle").manifest
    assert held.gate.hold_steps == 3 and DecisionState.for_bundle(held).gate_hold_steps == 3  # what serve builds
    run_cli("export", str(run_dir), "--gate", "rollout", "--out", str(tmp_path / "plain"))
    assert load_bundle(tmp_path / "plain").manifest.gate.hold_steps == 1


def test_a_branch_continues_with_the_deployed_gates_latch_not_a_reset_one(fitted_run):
    """A latch that never passes its entry test but, once open, never closes: a branch from a state where the deployed
    gate was open must continue raw (the deployed policy), not latent as a reset latch would."""
    from spaars_robot.envs import make_env
    from spaars_robot.train.branching import branch_return
    from spaars_robot.train.gate_fit import set_controller

    _, run_dir, _ = fitted_run
    config, task, agent, nets, layer = load_gated_agent(run_dir)
    state = collect_states(agent, task, 3, 4, layer, seed_base=321)[-1]
    seen = gate_inputs(agent, nets, [state], config.online.gate.kappa)
    env = make_env(task)

    def branch(**kw):
        return branch_return(env, agent, state.qpos, state.qvel, seen.raw[0].detach().numpy(), 12, 0.99, 0.1, 7,
                             layer, state.safety, state.obs, **kw)

    expected = {}
    for name in ("raw", "latent"):
        set_controller(agent, name, None)
        expected[name] = branch()
    set_controller(agent, "critic_gate", None)
    agent.eval_gate.tau_rel, agent.eval_gate.hysteresis_rel = 1e9, 2e9  # entry never passes, an open latch stays
    # approx: MuJoCo's solver warm start carries from the previous branch, ~1e-15 apart
    assert branch(gate_open=True) == pytest.approx(expected["raw"], abs=1e-9)
    assert branch(gate_open=False) == pytest.approx(expected["latent"], abs=1e-9)
    assert branch() == pytest.approx(expected["latent"], abs=1e-9)  # unset: a reset latch, as before
    assert abs(branch(gate_open=True, lead="latent", lead_steps=4)
               - branch(gate_open=False, lead="latent", lead_steps=4)) > 1e-6  # the latch carried through the lead
    env.close()
    assert abs(expected["raw"] - expected["latent"]) > 1e-6


def test_saved_states_keep_the_gates_latch_apart_from_what_the_support_monitor_let_through(fitted_run):
    """With `online.support_monitor` the gate can be open where the executed action was the latent fallback: the saved
    state keeps both latches, so a branch continues with an open gate and an engaged monitor, as deployed."""
    from spaars_robot.envs import make_env
    from spaars_robot.train.branching import branch_return

    _, run_dir, _ = fitted_run
    config, task, agent, nets, layer = load_gated_agent(run_dir)
    agent.cfg = agent.cfg.model_copy(update={"support_monitor": True})
    agent.eval_gate.tau_rel, agent.eval_gate.hysteresis_rel = -1e9, 0.0  # the gate always chooses raw
    nets.support_threshold.fill_(-1.0)  # and the monitor vetoes every raw action
    states = collect_states(agent, task, 3, 4, layer, seed_base=321)
    assert all(s.gate_latch and s.support_latch and not s.deployed_raw for s in states)
    env = make_env(task)
    agent.eval_support_latch.on = False
    state = states[-1]
    branch_return(env, agent, state.qpos, state.qvel, nets.decoded_latent_mean(agent._s(state.obs))[0].detach().numpy(),
                  0, 0.99, 0.1, 7, layer, state.safety, state.obs, gate_open=True, support_on=True)
    env.close()  # horizon 0: no step decided anything, so the latches are what the branch restored after its reset
    assert agent.eval_support_latch.on and agent.eval_gate.is_open
