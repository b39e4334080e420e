"""The gate's ground-truth diagnostic runs on a real (smoke) SPAARS run and is reproducible (issue 16)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import REPO, run_cli


def _diagnose(run_dir, cache, out, *refit):
    refit = refit or ("--refit", "2,3")
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "gate_accuracy.py"), str(run_dir), "--cache-dir",
                    str(cache), "--states", "12", "--stride", "5", "--horizon", "15", "--repeats", "3",
                    *refit, "--refit-updates", "30", "--out", str(out)], check=True, capture_output=True, text=True,
                   timeout=300, cwd=REPO)
    return json.loads(out.read_text())


def test_gate_accuracy_scores_the_gate_against_branched_rollouts(tiny_hopper_dataset, tmp_path):
    cache = tmp_path / "cache"
    run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--algo", "spaars", "--protocol",
            "smoke", "--runs-root", str(tmp_path / "runs"), env={"SPAARS_CACHE": str(cache)})
    run_dir = tmp_path / "runs" / "hopper-spaars-safe-smoke" / "seed0"  # the default: under safety/hopper.yaml
    first = _diagnose(run_dir, cache, tmp_path / "a.json")
    assert first["states"] == 12 and 0 <= first["significant_states"] <= 12
    for key in ("sign_accuracy", "mean_advantage_sign_accuracy"):
        assert first[key] is None or 0.0 <= first[key] <= 1.0
    assert len(first["member_sign_accuracy"]) == 2  # the smoke critic's two members, each scored
    assert 0.0 <= first["gate_open_rate"] <= 1.0 and first["true_advantage_abs_mean"] > 0
    # significance is the paired t-test's, state by state, and every accuracy carries its interval
    per_state = first["per_state"]
    assert first["significant_states"] == sum(p < 0.05 for p in per_state["p_value"])
    assert len(per_state["true_difference"]) == len(per_state["critic_advantage"]) == 12
    assert first["significance"]["expected_by_chance"] == 0.6
    assert -1.0 <= first["rank_correlation"] <= 1.0 and -1.0 <= first["refit"][0]["rank_correlation"] <= 1.0
    # agreement over every state, and --rescore recomputes it from the written per-state arrays alone
    assert first["gate_critic"] == "shared" and -1.0 <= first["agreement"]["pearson"] <= 1.0
    assert first["agreement"]["spearman"] == pytest.approx(first["rank_correlation"])
    rescored = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gate_accuracy.py"), "--rescore",
                               str(tmp_path / "a.json")], check=True, capture_output=True, text=True, cwd=REPO)
    assert json.loads(rescored.stdout)[str(tmp_path / "a.json")] == pytest.approx(first["agreement"], rel=1e-9)
    assert all(len(r["critic_advantage"]) == 12 and "pearson" in r["agreement"] for r in first["refit"])
    # the deployed gate: its latch opens wherever the entry test passes and may stay open where it does not
    deployed, entry = per_state["deployed_open"], per_state["gate_open"]
    assert len(deployed) == 12 and all(d >= e for d, e in zip(deployed, entry))
    assert first["deployed_gate_open_rate"] == pytest.approx(sum(deployed) / 12)
    assert first["deployed_gate_open_rate"] >= first["gate_open_rate"]
    sig = [i for i, p in enumerate(per_state["p_value"]) if p < 0.05]
    right = [bool(deployed[i]) == (per_state["true_difference"][i] > 0) for i in sig]
    assert first["deployed_sign_accuracy"] == (pytest.approx(sum(right) / len(right)) if sig else None)
    # --add-deployed rebuilds those fields for a result written before they were kept, and refuses other states
    old = {k: v for k, v in first.items() if not k.startswith("deployed_")}
    old["per_state"] = {k: v for k, v in per_state.items() if k != "deployed_open"}
    (tmp_path / "old.json").write_text(json.dumps(old))
    added = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gate_accuracy.py"), "--cache-dir", str(cache),
                            "--add-deployed", str(tmp_path / "old.json")], check=True, capture_output=True,
                           text=True, timeout=300, cwd=REPO)
    assert json.loads(added.stdout)[str(tmp_path / "old.json")]["deployed_gate_open_rate"] == first["deployed_gate_open_rate"]
    assert json.loads((tmp_path / "old.json").read_text()) == first
    old["per_state"]["lcb"] = [x + 1.0 for x in old["per_state"]["lcb"]]  # not the states this run collects
    (tmp_path / "other.json").write_text(json.dumps(old))
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gate_accuracy.py"), "--cache-dir", str(cache),
                          "--add-deployed", str(tmp_path / "other.json")], capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert bad.returncode != 0 and "not the written ones" in bad.stderr
    assert json.loads((tmp_path / "other.json").read_text()) == old  # refused: the file is left as it was
    # the costly half: significant states ranked by the true |difference|, not by the critic's |advantage|
    sig = [i for i, p in enumerate(per_state["p_value"]) if p < 0.05]
    if len(sig) >= 2:
        sizes = sorted(abs(per_state["true_difference"][i]) for i in sig)
        median = (sizes[(len(sizes) - 1) // 2] + sizes[len(sizes) // 2]) / 2
        costly = [i for i in sig if abs(per_state["true_difference"][i]) > median]
        right = [(per_state["critic_advantage"][i] > 0) == (per_state["true_difference"][i] > 0) for i in costly]
        assert first["costly_half_sign_accuracy"] == (pytest.approx(sum(right) / len(right)) if right else None)
    else:
        assert first["costly_half_sign_accuracy"] is None
    if first["significant_states"]:
        low, high = first["sign_accuracy_ci95"]
        assert 0.0 <= low <= first["sign_accuracy"] <= high <= 1.0
    # fresh ensembles of 2 and 3 members refitted on the run's batches with its TD target, each scored alike
    assert [r["members"] for r in first["refit"]] == [2, 3] and [len(r["member_sign_accuracy"]) for r in first["refit"]] == [2, 3]
    assert all(r["critic_advantage_abs_mean"] > 0 and 0.0 <= r["lcb_positive_rate"] <= 1.0 for r in first["refit"])
    assert first["refit"][0]["critic_advantage_abs_mean"] != first["critic_advantage_abs_mean"]  # not the run's critic

    def timeless(result):
        return {k: v for k, v in result.items() if k not in ("seconds", "refit")} | {
            "refit": [{k: v for k, v in r.items() if k != "fit_seconds"} for r in result["refit"]]}

    second = _diagnose(run_dir, cache, tmp_path / "b.json")  # common random numbers, seeded refits: the same again
    assert timeless(first) == timeless(second)
    # the run's own critic continued on its online replay alone: a third estimate on the same ground truth
    third = _diagnose(run_dir, cache, tmp_path / "c.json", "--refit", "2:run@0,2+mean,2/5")
    refit, mean_target, five_step = third["refit"]
    assert (refit["init"], refit["offline_ratio"]) == ("run", 0.0) and first["refit"][0]["init"] == "fresh"
    assert (refit["target_action"], mean_target["target_action"]) == ("sample", "mean")
    assert mean_target["critic_advantage_abs_mean"] != first["refit"][0]["critic_advantage_abs_mean"]
    assert (first["refit"][0]["nstep"], five_step["nstep"], five_step["target_action"]) == (1, 5, "sample")
    assert five_step["critic_advantage_abs_mean"] != first["refit"][0]["critic_advantage_abs_mean"]
    assert third["per_state"] == first["per_state"]  # same states, same truth: only the refit differs
    assert refit["critic_advantage_abs_mean"] not in (first["critic_advantage_abs_mean"],
                                                      first["refit"][0]["critic_advantage_abs_mean"])
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gate_accuracy.py"), str(run_dir), "--cache-dir",
                          str(cache), "--refit", "3:run"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert bad.returncode != 0 and "continues the run's 2-member critic" in bad.stderr
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gate_accuracy.py"), str(run_dir), "--cache-dir",
                          str(cache), "--refit", "2+mean/0"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert bad.returncode != 0 and "the n-step is a whole number >= 1" in bad.stderr
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gate_accuracy.py"), str(run_dir), "--cache-dir",
                          str(cache), "--refit", "2*0"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert bad.returncode != 0 and "the update count is a whole number >= 1" in bad.stderr


def test_a_held_out_gate_critic_is_what_the_diagnostic_scores_beside_the_shared_one(tiny_hopper_dataset, tmp_path):
    """With `online.gate.critic=held_out` the gate's accuracy is the held-out critic's, and the shared critic (what
    the actors maximise) is scored on the same states and truth: the comparison the option exists for."""
    cache = tmp_path / "cache"
    run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--algo", "spaars", "--protocol",
            "smoke", "--safety-spec", "none", "--set", "online.gate.critic=held_out", "--runs-root",
            str(tmp_path / "runs"), env={"SPAARS_CACHE": str(cache)})
    (run_dir,) = (tmp_path / "runs").glob("hopper-spaars-set-*-smoke/seed0")
    result = _diagnose(run_dir, cache, tmp_path / "h.json", "--refit", "2*20")  # *U: this refit's own budget
    shared = result["shared_critic"]
    assert result["gate_critic"] == "held_out" and [r["updates"] for r in result["refit"]] == [20]
    assert len(shared["critic_advantage"]) == len(result["per_state"]["critic_advantage"]) == 12
    assert shared["critic_advantage"] != result["per_state"]["critic_advantage"]  # two critics, one truth
    assert -1.0 <= shared["agreement"]["pearson"] <= 1.0
    scores = result["per_state"]["raw_support_score"]  # the runtime monitor's score of each state's raw action
    assert len(scores) == 12 and all(x == x and x >= 0 for x in scores) and result["support_threshold"] > 0


def test_the_raw_action_branched_is_the_one_the_deployed_gate_executes(tiny_hopper_dataset, tmp_path, monkeypatch):
    """With `online.raw_init=spar` the agent's raw controller is SPAR's rectified policy, not the pretraining's AWR
    policy that `nets.raw_policy` still holds: the diagnostic must branch and score the rectified one (until
    2026-12-05 it used the AWR policy's action, which the deployed gate never executes)."""
    cache = tmp_path / "cache"
    run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--algo", "spaars", "--protocol",
            "smoke", "--safety-spec", "none", "--set", "online.raw_init=spar", "--runs-root", str(tmp_path / "runs"),
            env={"SPAARS_CACHE": str(cache)})
    (run_dir,) = (tmp_path / "runs").glob("hopper-spaars-set-*-smoke/seed0")
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gate_accuracy

    config, task, built, layer = gate_accuracy.load_agent(run_dir, cache)
    agent, nets = built.agent, built.nets
    states = gate_accuracy.collect_states(agent, task, 6, 5, layer, seed_base=gate_accuracy.DIAGNOSTIC_SEED_BASE)
    with torch.no_grad():  # as the diagnostic's main runs it
        seen = gate_accuracy.gate_inputs(agent, nets, states, config.online.gate.kappa)
        awr = nets.raw_policy.mean_action(seen.obs).numpy()
    agent.force_raw = True  # the gate open: what the robot receives is the branched raw action
    executed = [agent.act(s.obs)[0] for s in states]
    assert all(np.allclose(a, r, atol=1e-6) for a, r in zip(executed, seen.raw.numpy()))
    assert not np.allclose(awr, seen.raw.numpy(), atol=1e-3)  # the two controllers differ: the test can fail
    # the deployed latch opens wherever the entry test on these LCBs passes (it read the same raw action)
    entry = (seen.lcb > config.online.gate.tau_rel * float(agent.gate_scale())).numpy()
    assert all(d or not e for d, e in zip(seen.deployed, entry))
