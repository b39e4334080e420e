"""Training with the deployed safety layer in the loop (issue 17, section 1): real MuJoCo, the real CLI."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from spaars_robot.config.tasks import load_task
from spaars_robot.data.files import safe_torch_load
from spaars_robot.envs import make_env
from spaars_robot.export.bundle import load_bundle
from spaars_robot.export.safety_binding import bind_spec, spec_sha256
from spaars_robot.safety.env_wrapper import SafetyLayerEnv
from spaars_robot.safety.limits import SafetyLayer
from spaars_robot.safety.spec import load_safety_spec, safety_dir
from spaars_robot.train.safety_in_loop import resolve_training_spec
from tests.conftest import run_cli


def test_the_wrapper_applies_the_servers_layer_and_reports_the_applied_action():
    hopper = load_task("hopper")
    spec = load_safety_spec("hopper")
    wrapped = SafetyLayerEnv(make_env(hopper), SafetyLayer(spec, 3, 11))
    plain = make_env(hopper)
    reference = SafetyLayer(spec, 3, 11)
    state = reference.new_state()
    obs, _ = wrapped.reset(seed=7)
    obs_plain, _ = plain.reset(seed=7)
    commands = np.random.default_rng(0).uniform(-1.5, 1.5, (40, 3))  # often beyond the soft zone and rate limit
    shaped = 0
    for command in commands:
        expected = reference.apply(command, state, obs_plain)
        obs, _, terminated, truncated, info = wrapped.step(command)
        np.testing.assert_allclose(info["applied_action"], expected.action, rtol=0, atol=1e-6)
        assert info["safety_limits"] == expected.limits
        shaped += bool(expected.limits)
        obs_plain, _, _, _, _ = plain.step(expected.action.astype(np.float32))
        np.testing.assert_array_equal(obs, obs_plain)  # the env was stepped with the applied action
        if terminated or truncated:
            break
    assert shaped > 5 and sum(wrapped.limit_counts.values()) >= shaped


def test_every_training_task_has_a_spec_that_fits_it():
    for path in sorted((safety_dir().parent / "sim" / "tasks").glob("*.yaml")):
        task = load_task(path.stem)
        spec, sha = resolve_training_spec(task, None)
        assert spec is not None and sha == spec_sha256(safety_dir() / f"{task.name}.yaml"), task.name


def test_a_spec_for_other_dimensions_is_refused_before_any_compute(tiny_hopper_dataset, tmp_path):
    proc = run_cli("train", "--task", "dmc-walker-walk", "--algo", "sac", "--protocol", "smoke", "--safety-spec",
                   "walker2d", "--runs-root", str(tmp_path), check=False, timeout=120)
    assert proc.returncode == 2 and "observation dims" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("change, message", [
    ({"names": ["leg_joint_torque", "thigh_joint_torque", "foot_joint_torque"]}, "names actions"),
    ({"low": -1.5, "high": 1.5}, "outside the task hopper's action range [-1, 1]"),
])
def test_a_spec_export_would_refuse_is_refused_before_any_compute(tiny_hopper_dataset, tmp_path, change, message):
    """Names are the joint order and the range must be the policy's: export refuses a spec that differs, so train
    must too, before it spends the run (found with a hand-written spec that trained, then failed export)."""
    spec = yaml.safe_load((safety_dir() / "hopper-joint-limits.yaml").read_text())
    spec["action"].update(change)
    spec_file = tmp_path / "swapped.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    proc = run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--protocol", "smoke",
                   "--safety-spec", str(spec_file), "--runs-root", str(tmp_path / "runs"), check=False, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.fixture(scope="module")
def safe_run(tiny_hopper_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("safe")
    spec_file = root / "hopper-tight.yaml"
    spec = yaml.safe_load((safety_dir() / "hopper.yaml").read_text())
    spec["action"].update(soft_zone=0.5, rate_limit=0.3)  # acts on most steps of a smoke policy
    spec_file.write_text(yaml.safe_dump(spec))
    env = {"SPAARS_CACHE": str(root / "cache")}
    run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--protocol", "smoke",
            "--safety-spec", str(spec_file), "--runs-root", str(root / "runs"), "--results-dir", str(root / "res"),
            env=env)
    return root, spec_file, env


def test_a_run_trains_under_its_spec_records_it_and_stores_applied_actions(safe_run):
    root, spec_file, _ = safe_run
    run_dir = root / "runs" / "hopper-spaars-safe-smoke" / "seed0"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["safety_spec"] == str(spec_file.resolve())
    assert config["safety_spec_sha256"] == spec_sha256(spec_file)
    (summary,) = [json.loads(p.read_text()) for p in (root / "res").glob("*.json")]
    on_data = summary["safety_spec"].pop("on_data")
    assert summary["safety_spec"] == {"file": spec_file.name, "sha256": spec_sha256(spec_file)}
    # the tight spec bends most of the data's own actions: measured before any compute and said in the log
    assert on_data["steps"] == 3000 and on_data["changed_share"] > 0.5 and "rate" in on_data["by_limit"]
    assert "the spec and the data disagree" in (run_dir / "train.log").read_text()
    online = safe_torch_load(run_dir / "checkpoint.pt")["online"]
    actions = np.asarray(online["action"][: int(online["size"])])
    layer = SafetyLayer(load_safety_spec(spec_file), 3, 11)
    assert (actions <= layer.hard_high + 1e-6).all() and (actions >= layer.hard_low - 1e-6).all()
    # within an episode consecutive stored actions respect the rate limit: they are the applied actions
    done = np.asarray(online["done"][: len(actions)]).astype(bool) | np.asarray(online["truncated"][: len(actions)])
    steps = np.abs(np.diff(actions, axis=0)).max(1)[~done[:-1]]
    assert steps.max() <= 0.3 + 1e-5


def test_its_bundle_records_the_spec_and_is_served_without_an_override(safe_run, tmp_path):
    root, spec_file, _ = safe_run
    out = tmp_path / "bundle"
    proc = run_cli("export", str(root / "runs" / "hopper-spaars-safe-smoke"), "--onnx", "--out", str(out))
    assert "warning" not in proc.stdout
    manifest = load_bundle(out).manifest
    assert manifest.safety.sha256 == spec_sha256(spec_file)
    bound = bind_spec(manifest, str(spec_file))  # what `serve --safety <spec>` runs: no --allow-spec-change needed
    assert bound.override is None


def test_a_resume_refuses_a_spec_that_changed(safe_run, tmp_path):
    root, spec_file, env = safe_run
    run_dir = tmp_path / "seed0"
    shutil.copytree(root / "runs" / "hopper-spaars-safe-smoke" / "seed0", run_dir)
    original = spec_file.read_text()
    try:
        spec_file.write_text(original.replace("rate_limit: 0.3", "rate_limit: 0.9"))
        proc = run_cli("train", "--resume", str(run_dir), env=env, check=False, timeout=120)
    finally:
        spec_file.write_text(original)
    assert proc.returncode == 2 and "changed since the run started" in proc.stderr


def test_without_a_layer_the_run_is_named_so_and_export_says_what_it_records(tiny_hopper_dataset, tmp_path):
    env = {"SPAARS_CACHE": str(tmp_path / "cache")}
    run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--protocol", "smoke", "--algo",
            "latent", "--safety-spec", "none", "--runs-root", str(tmp_path / "runs"), env=env)
    run_dir = tmp_path / "runs" / "hopper-latent-smoke"
    assert yaml.safe_load((run_dir / "seed0" / "config.yaml").read_text())["safety_spec"] is None
    proc = run_cli("export", str(run_dir), "--onnx", "--out", str(tmp_path / "bundle"))
    assert "trained without a safety layer" in proc.stdout


def test_a_run_whose_recorded_spec_moved_exports_with_the_same_spec_named_by_safety(tmp_path):
    """The recorded spec path is absolute; a run trained in a removed worktree or a moved checkout lost it. The error
    says to pass --safety, and that must work when the named spec is the same file (same hash): found exporting a
    kitchen run trained from a worktree, where --safety safety/kitchen.yaml was refused with the same error."""
    from spaars_robot.errors import SpaarsError
    from spaars_robot.export.from_run import export_spec

    same = tmp_path / "hopper.yaml"
    shutil.copy(safety_dir() / "hopper.yaml", same)
    other = tmp_path / "walker2d.yaml"
    shutil.copy(safety_dir() / "walker2d.yaml", other)
    config = {"task": "hopper", "safety_spec": str(tmp_path / "gone" / "hopper.yaml"),
              "safety_spec_sha256": spec_sha256(same)}
    with pytest.raises(SpaarsError, match="missing or has changed since"):
        export_spec(config, None)
    assert export_spec(config, str(same)) == (str(same), None)
    spec, warning = export_spec(config, str(other))
    assert spec == str(other) and "not under" in warning
