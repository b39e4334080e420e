"""`data collect --safety-spec`: the behaviour policy acts through the SafetyLayer serve runs, the dataset stores
the applied actions, and its name, metadata and resumable work say which limits made it."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from spaars_robot.data.episodes import iter_episodes, read_metadata
from spaars_robot.export.safety_binding import spec_sha256
from tests.conftest import REPO, run_cli

KEPT = REPO / "policies" / "behaviour" / "hopper-medium-seed0.pt"
STEPS = "2500"


def _collect(root: Path, *flags: str, check: bool = True):
    return run_cli("data", "collect", "--task", "hopper", "--quality", "medium", "--steps", STEPS,
                   "--behaviour-policy", str(KEPT), "--threads", "1", "--root", str(root), *flags, check=check)


def _actions(path: Path) -> list[np.ndarray]:
    return [ep.actions for ep in iter_episodes(path)]


def test_the_dataset_holds_the_applied_actions_of_the_task_spec(tmp_path):
    _collect(tmp_path / "plain")
    _collect(tmp_path / "safe", "--safety-spec", "hopper")
    plain = tmp_path / "plain" / "spaars" / "hopper-medium-v0"
    safe = tmp_path / "safe" / "spaars" / "hopper-medium-safe-v0"
    meta = read_metadata(safe)
    assert meta["dataset_id"] == "spaars/hopper-medium-safe-v0"
    assert meta["spaars_safety_spec"] == "hopper.yaml"
    assert meta["spaars_safety_spec_sha256"] == spec_sha256(REPO / "safety" / "hopper.yaml")
    assert "spaars_safety_spec" not in read_metadata(plain)
    # safety/hopper.yaml: hard bound 0.98, soft zone from 0.88 at stiffness 0.5, so nothing applied exceeds
    # 0.88 + 0.5 * (1 - 0.88) = 0.94; the unconstrained behaviour commands up to its tanh bound
    plain_max = max(float(np.abs(a).max()) for a in _actions(plain))
    safe_actions = _actions(safe)
    assert plain_max > 0.97
    assert max(float(np.abs(a).max()) for a in safe_actions) <= 0.94 + 1e-5
    # rate limit 1.0 per control step, from rest at each episode's start, as a fresh server session
    for actions in safe_actions:
        steps = np.diff(np.concatenate([np.zeros((1, actions.shape[1]), actions.dtype), actions]), axis=0)
        assert float(np.abs(steps).max()) <= 1.0 + 1e-5


def test_another_spec_gets_its_own_name_and_a_changed_spec_is_refused(tmp_path):
    spec = tmp_path / "gentle.yaml"
    shutil.copy(REPO / "safety" / "hopper.yaml", spec)
    root = tmp_path / "data"
    _collect(root, "--safety-spec", str(spec))
    made = root / "spaars" / "hopper-medium-safe-gentle-v0"
    assert read_metadata(made)["spaars_safety_spec_sha256"] == spec_sha256(spec)
    assert not list((root / "spaars" / "_work").glob("*")), "finished work left behind"
    spec.write_text(spec.read_text().replace("soft_zone: 0.1", "soft_zone: 0.05"))
    proc = _collect(root, "--safety-spec", str(spec), check=False)
    assert proc.returncode != 0
    assert "made under safety spec" in proc.stderr and "Traceback" not in proc.stderr
    assert read_metadata(made)["spaars_safety_spec_sha256"] != spec_sha256(spec)  # the dataset was left untouched
