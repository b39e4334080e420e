"""Every algorithm runs the `smoke` protocol end to end through the real CLI on real MuJoCo."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from spaars_robot.data.files import safe_torch_load
from tests.conftest import run_cli

# spar itself: tests/train/test_spar_end_to_end.py (smoke run, export, serve)
ALGOS = [("spaars", []), ("iql", []), ("latent", []), ("raw", []), ("sac", []),
         ("spaars", ["--no-concurrent-bc", "--hard-switch"]), ("bc", []), ("td3bc", []),
         ("spaars", ["--set", "online.raw_init=spar"]),
         ("spaars", ["--set", "online.critic_nstep=3"]), ("spaars", ["--set", "online.gate.critic=held_out"])]


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    return {"SPAARS_CACHE": str(tmp_path_factory.mktemp("pretrain_cache"))}


@pytest.fixture(scope="module")
def smoke_run(tiny_hopper_dataset, tmp_path_factory, cache_env):
    """`smoke_run(algo, *flags)` -> (run dir, results dir) of that smoke training, run once per module: the tests
    that read the plain iql / latent runs reuse the ones test_smoke_protocol made (each is ~20 s of CI)."""
    done: dict[tuple, tuple] = {}

    def run(algo: str, *flags: str):
        if (algo, flags) not in done:
            root = tmp_path_factory.mktemp(f"smoke-{algo}")
            runs, results = root / "runs", root / "results"
            run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--algo", algo, "--protocol",
                    "smoke", "--runs-root", str(runs), "--results-dir", str(results), *flags, env=cache_env)
            (run_dir,) = [p.parent for p in runs.glob("*/seed0/metrics.csv")]
            done[(algo, flags)] = (run_dir, results)
        return done[(algo, flags)]

    return run


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("algo,flags", ALGOS, ids=["spaars", "iql", "latent", "raw", "sac", "spaars-ablations", "bc", "td3bc",
                              "spaars-spar-raw", "spaars-nstep", "spaars-held-out-gate-critic"])
def test_smoke_protocol(algo, flags, smoke_run):
    run_dir, results = smoke_run(algo, *flags)
    rows = _rows(run_dir)
    assert [int(r["step"]) for r in rows] == [0, 200, 400, 600]
    assert all(r["normalized_mean"] not in ("", "nan") for r in rows)
    for name in ("config.yaml", "checkpoint.pt", "summary.json"):
        assert (run_dir / name).exists(), name
    assert any((run_dir / "tb").iterdir()), "TensorBoard events missing"
    (summary_file,) = results.glob("*.json")
    summary = json.loads(summary_file.read_text())
    assert summary["algo"] == algo and len(summary["curve"]) == 4
    # final = mean of the last (up to) 5 online evaluations; the offline start (step 0) is not one of them
    assert summary["final_normalized"] == pytest.approx(sum(float(r["normalized_mean"]) for r in rows[1:]) / 3)
    phases = [r["phase"] for r in rows]
    if algo == "spaars":
        # smoke's t_max=400 forces the switch: latent first, gated after, and the switch is logged
        assert phases[:2] == ["latent", "latent"] and phases[-1] == "gated"
        switch = summary["switch"][0]
        assert "t_max" in switch["reason"] and "checks:" in switch["reason"]  # where each check stood at the cap
        assert switch["thresholds"]["t_max"] == 400 and switch["thresholds"]["bc_error_max"] == 0.01
        if "--hard-switch" in flags:
            assert float(rows[-1]["train_raw_rate"]) == 1.0
    elif algo == "latent":
        assert set(phases) == {"latent"} and float(rows[-1]["train_raw_rate"]) == 0.0
    elif algo == "raw":
        assert set(phases) == {"gated"} and float(rows[-1]["train_raw_rate"]) == 1.0
    elif algo in ("spar", "bc", "td3bc"):
        assert set(phases) == {algo} and float(rows[-1]["train_raw_rate"]) == 1.0
    if algo == "td3bc":
        _assert_td3bc_moved_the_anchor(run_dir, smoke_run("bc")[0])
    if algo in ("spar", "bc", "td3bc") or "online.raw_init=spar" in flags:  # SPAR's offline stages ran, in the record
        spar_info = json.loads((run_dir / "pretrain.json").read_text())["spar"]
        assert [h["stage"] for h in spar_info["history"]][-1] == "lsi"  # (bc reuses spar's cache entry)
        assert "spar" in safe_torch_load(run_dir / "checkpoint.pt")["agent"]
    if "online.critic_nstep=3" in flags:  # n reaches the runner's batches and the agent's TD target
        plain = safe_torch_load(smoke_run("spaars")[0] / "checkpoint.pt")["agent"]["critic_target"]
        other = safe_torch_load(run_dir / "checkpoint.pt")["agent"]["critic_target"]
        assert plain.keys() == other.keys() and any(not torch.equal(plain[k], other[k]) for k in plain)
    if "online.gate.critic=held_out" in flags:  # the gate's own critic: trained, saved, exported; nothing else moved
        _assert_held_out_gate_critic(run_dir, smoke_run("spaars")[0], rows)
    if algo != "sac":
        assert (run_dir / "pretrain.json").exists()
        # trained under hopper's spec (the default): how much it changes the dataset's actions, measured and logged
        on_data = summary["safety_spec"]["on_data"]
        assert on_data["steps"] == 3000 and 0.0 <= on_data["changed_share"] <= 1.0
        assert "safety spec hopper.yaml on " in (run_dir / "train.log").read_text()
        assert 0.0 <= summary["early_out_of_support_rate"] <= 1.0
    else:  # no dataset CVAE to score support with: not measured, never a made-up 0 %
        assert summary["early_out_of_support_rate"] is None
        assert all(r["out_of_support_rate"] == "" for r in rows)


def _assert_td3bc_moved_the_anchor(run_dir, bc_dir) -> None:
    """td3bc starts from SPAR's anchor (the bc run's, same cache entry), improves it for lsi_steps offline updates
    and online; its residual stays off; export serves that actor as the raw policy."""
    from spaars_robot.export.from_run import load_run_for_export

    info = json.loads((run_dir / "pretrain.json").read_text())["td3bc"]
    assert info["steps"] == 100 and info["history"][-1]["step"] == 100  # smoke's spar.lsi_steps
    td3bc, bc = (safe_torch_load(d / "checkpoint.pt")["agent"]["spar"] for d in (run_dir, bc_dir))
    assert float(td3bc["residual_on"]) == 0.0
    anchor = [k for k in bc if k.startswith("anchor.")]
    assert anchor and all(td3bc[k].shape == bc[k].shape for k in anchor)
    assert any(not torch.equal(td3bc[k], bc[k]) for k in anchor)
    stack, _ = load_run_for_export(run_dir)
    exported = stack.raw_policy.state_dict()
    assert all(torch.equal(exported[k], td3bc[k]) for k in anchor)


def _assert_held_out_gate_critic(run_dir, plain_dir, rows: list[dict]) -> None:
    """Up to the switch the run is the shared-gate run's (same evaluations); the held-out critic was fitted and is
    what export hands the bundle's gate, not the shared critic."""
    from spaars_robot.export.from_run import load_run_for_export

    plain_rows = _rows(plain_dir)
    latent = [i for i, r in enumerate(rows) if r["phase"] == "latent"]
    assert latent and all(rows[i]["return_mean"] == plain_rows[i]["return_mean"] for i in latent)
    agent = safe_torch_load(run_dir / "checkpoint.pt")["agent"]
    gate_critic, shared = agent["gate_critic"], agent["nets"]
    # a critic that never trained equals its target (a copy, then Polyak averages of equal weights)
    assert any(not torch.equal(gate_critic[k], agent["gate_critic_target"][k]) for k in gate_critic)
    stack, _ = load_run_for_export(run_dir)
    exported = stack.critic.state_dict()
    assert all(torch.equal(exported[k], gate_critic[k]) for k in gate_critic)
    assert any(not torch.equal(exported[k], shared[f"critic.{k}"]) for k in gate_critic)


def test_pretraining_is_cached_across_algorithms(smoke_run):
    first = json.loads((smoke_run("spaars")[0] / "pretrain.json").read_text())
    infos = [json.loads((smoke_run(algo)[0] / "pretrain.json").read_text()) for algo in ("iql", "latent")]
    assert not first["cache_hit"]  # the module's first pretraining computed it ...
    assert all(info["cache_hit"] and info["cache"] == first["cache"] for info in infos)  # ... the others read it


def test_bad_arguments_are_one_line_errors(tiny_hopper_dataset, tmp_path):
    proc = run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--protocol", "nope",
                   check=False)
    assert proc.returncode == 2 and "unknown protocol 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--protocol", "smoke",
                   "--set", "online.gate.kappa=-1", "--runs-root", str(tmp_path), check=False)
    assert proc.returncode == 2 and "online.gate.kappa" in proc.stderr
    proc = run_cli("train", "--task", "hopper", "--algo", "spaars", check=False)
    assert proc.returncode == 2 and "--dataset is required" in proc.stderr


def test_iql_baseline_does_not_depend_on_the_cvae(smoke_run):
    """IQL neither trains nor acts through the CVAE, so a CVAE hyperparameter must leave its returns bit-identical
    (only the out-of-support metric, scored by the CVAE, may change). This is what lets IQL results from before the
    CVAE KL weight changed stand beside the new SPAARS results."""
    plain, (other, results) = smoke_run("iql")[0], smoke_run("iql", "--set", "pretrain.cvae_kl_weight=0.5")
    assert [r["return_mean"] for r in _rows(plain)] == [r["return_mean"] for r in _rows(other)]
    assert json.loads((other / "pretrain.json").read_text())["cache"] != json.loads(
        (plain / "pretrain.json").read_text())["cache"]  # the CVAE really was trained differently
    (tagged,) = results.glob("hopper_iql-safe-set-*_smoke_seed0.json")
    assert json.loads(tagged.read_text())["tag_sets"] == {"pretrain.cvae_kl_weight": 0.5}  # the summary says what it ran


def _raw_policy(state):
    return {k: v for k, v in state.items() if k.startswith("raw_policy.")}


@pytest.mark.parametrize("concurrent_bc", [True, False], ids=["concurrent-bc", "no-concurrent-bc"])
def test_concurrent_bc_is_what_moves_the_raw_policy_before_the_switch(concurrent_bc, tiny_hopper_dataset, tmp_path,
                                                                      cache_env):
    """Stopped before smoke's switch (t_max=400): with concurrent BC the raw policy has been trained on the
    decoded latent actions; with --no-concurrent-bc it is still exactly its offline initialisation."""
    run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--protocol", "smoke",
            "--runs-root", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res"),
            "--set", "online.env_steps=300", *([] if concurrent_bc else ["--no-concurrent-bc"]), env=cache_env)
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/seed0/checkpoint.pt")]
    final = safe_torch_load(run_dir / "checkpoint.pt")["agent"]
    assert final["phase"] == "latent"
    start = safe_torch_load(json.loads((run_dir / "pretrain.json").read_text())["cache"])["nets"]
    moved = any(not torch.equal(start[k], v) for k, v in _raw_policy(final["nets"]).items())
    assert moved == concurrent_bc


def test_latent_phase_td3bc_changes_only_the_raw_policy_before_the_switch(tiny_hopper_dataset, tmp_path, cache_env):
    """`online.latent_phase_raw=td3bc` trains the raw actor against the shared critic during the latent phase. The
    raw policy never acts there and its update draws no random numbers, so everything else the run holds (critic,
    latent policy, RND, the evaluations) is bit-identical to concurrent BC's run and only the raw policy differs;
    and it differs toward what TD3+BC's Q term asks: higher Q under the run's own critic on the dataset's states."""
    finals = {}
    for mode in ("bc", "td3bc"):
        runs = tmp_path / mode
        run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--protocol", "smoke",
                "--runs-root", str(runs), "--results-dir", str(tmp_path / f"res-{mode}"),
                "--set", "online.env_steps=300", "--set", f"online.latent_phase_raw={mode}", env=cache_env)
        (run_dir,) = [p.parent for p in runs.glob("*/seed0/checkpoint.pt")]
        finals[mode] = (safe_torch_load(run_dir / "checkpoint.pt")["agent"], _rows(run_dir))
    (bc, bc_rows), (td3, td3_rows) = finals["bc"], finals["td3bc"]
    assert bc["phase"] == td3["phase"] == "latent"
    assert [r["return_mean"] for r in bc_rows] == [r["return_mean"] for r in td3_rows]
    others = [k for k in bc["nets"] if not k.startswith("raw_policy.")]
    assert others and all(torch.equal(bc["nets"][k], td3["nets"][k]) for k in others)
    assert any(not torch.equal(bc["nets"][k], td3["nets"][k]) for k in _raw_policy(bc["nets"]))


def test_latent_phase_td3bc_is_refused_where_it_would_be_ignored(tiny_hopper_dataset, tmp_path, cache_env):
    for flags in (["--algo", "latent"], ["--no-concurrent-bc"]):
        out = run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--protocol", "smoke",
                      "--runs-root", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res"), *flags,
                      "--set", "online.latent_phase_raw=td3bc", env=cache_env, check=False)
        assert out.returncode != 0
        assert "latent_phase_raw" in out.stderr and "Traceback" not in out.stderr
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("checkpoint.pt"))


def test_transition_replay_reproduces_the_run_and_answers_for_another_rule(smoke_run, tmp_path):
    """`transition replay` on a real smoke run, from its run directory and from its compact summary: the run's own
    settings reproduce its logged switch word for word, a candidate rule is decided on the same rows, and rows that
    no longer match the logged decision are refused instead of replayed."""
    import shutil

    run_dir, results = smoke_run("spaars")
    (summary_file,) = results.glob("*.json")
    answers = []
    for source in (run_dir, summary_file):
        out = tmp_path / f"replay-{source.name}.json"
        proc = run_cli("transition", "replay", str(source), "--set", "online.transition.t_max=200", "--set",
                       "t_min=0", "--out", str(out))
        assert "own rule, reproduced: step" in proc.stdout
        (result,) = json.loads(out.read_text())["runs"]
        assert result["candidate"]["step"] == 200 and "hard cap t_max=200" in result["candidate"]["reason"]
        assert result["candidate"]["config"]["t_max"] == 200 and not result["fired_before_t_max"]
        answers.append({k: result[k] for k in ("own", "candidate")})
    assert answers[0] == answers[1]  # the summary's curve carries exactly what metrics.csv has
    switch = json.loads(summary_file.read_text())["switch"][0]
    assert answers[0]["own"]["step"] == switch["step"] and answers[0]["own"]["reason"] == switch["reason"]

    tampered = tmp_path / "tampered"
    shutil.copytree(run_dir, tampered)
    rows = _rows(tampered)
    switching_row = [int(r["step"]) for r in rows].index(switch["step"])
    rows[switching_row]["bc_error"] = "123.0"  # the switching row's BC error, which its logged reason quotes
    with open(tampered / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    proc = run_cli("transition", "replay", str(tampered), check=False)
    assert proc.returncode == 2 and "does not reproduce its logged switch" in proc.stderr

    proc = run_cli("transition", "replay", str(smoke_run("raw")[0]), check=False)
    assert proc.returncode == 2 and "has no latent phase" in proc.stderr


def test_a_latent_only_run_logs_spaars_latent_phase_continued(smoke_run, tmp_path):
    """The latent-only ablation's logged checks are SPAARS's, bit for bit, up to SPAARS's switch (the raw policy is
    cloned there too and never acts), so `transition replay` on a latent-only summary decides a rule with a later
    t_max exactly as it would have decided inside SPAARS's run."""
    spaars_dir, _ = smoke_run("spaars")
    latent_dir, latent_results = smoke_run("latent")
    switched = [int(r["step"]) for r in _rows(spaars_dir)].index(
        json.loads((spaars_dir / "summary.json").read_text())["switch"][0]["step"])
    keys = ("step", "return_mean", "novelty", "bc_error", "gate_rate_recent")
    assert ([{k: r[k] for k in keys} for r in _rows(latent_dir)[:switched + 1]]
            == [{k: r[k] for k in keys} for r in _rows(spaars_dir)[:switched + 1]])
    (summary_file,) = latent_results.glob("*.json")
    out = tmp_path / "latent.json"
    proc = run_cli("transition", "replay", str(summary_file), "--set", "t_max=600", "--out", str(out))
    assert "latent-only run" in proc.stdout
    (result,) = json.loads(out.read_text())["runs"]
    assert result["own"] is None and result["candidate"]["replayed_up_to"] == 600
    assert [c["step"] for c in result["candidate"]["checks"]] == [int(r["step"]) for r in _rows(latent_dir)][
        :len(result["candidate"]["checks"])]


@pytest.mark.parametrize("algo,flags,controller", [
    ("iql", (), "raw"), ("latent", (), "latent"), ("raw", (), "raw"), ("td3bc", (), "raw"), ("bc", (), "raw"),
    ("spaars", ("--no-concurrent-bc", "--hard-switch"), "raw"), ("spaars", (), "gated")])
def test_each_export_deploys_the_controller_its_run_evaluated(algo, flags, controller, smoke_run):
    """The bundle serves what the run's evaluation scored: the raw policy alone where every evaluation step was raw,
    the latent controller alone where none was, the gate only for SPAARS after its switch."""
    from spaars_robot.export.from_run import load_run_for_export

    run_dir, _ = smoke_run(algo, *flags)
    _, info = load_run_for_export(run_dir)
    assert info.controller == controller
    last_raw_rate = float(_rows(run_dir)[-1]["eval_raw_rate"])
    if controller == "raw":
        assert last_raw_rate == 1.0
    elif controller == "latent":
        assert last_raw_rate == 0.0
