"""Issue 21 through the real CLI: `train` and `data collect` print plain progress lines when stdout is a log
file (here a pipe), the printed final score says what it averages, and `export` takes the run directory
that `train` made (one seed inside) or names the seed runs to choose from (several)."""
from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def smoke_run(tiny_hopper_dataset, tmp_path_factory):
    """One `train --protocol smoke` run with stdout a pipe, progress lines on every update."""
    tmp = tmp_path_factory.mktemp("issue21")
    env = {"SPAARS_CACHE": str(tmp / "cache"), "SPAARS_PROGRESS_SECONDS": "0"}
    proc = run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--protocol", "smoke",
                   "--runs-root", str(tmp / "runs"), "--results-dir", str(tmp / "res"), env=env)
    (group,) = [p for p in (tmp / "runs").iterdir() if p.name != "summaries"]
    return tmp, group, proc.stdout


def test_train_prints_plain_progress_lines_when_stdout_is_not_a_terminal(smoke_run) -> None:
    _, _, stdout = smoke_run
    assert re.search(r"^\d\d:\d\d:\d\d offline pretraining: 200/200 \(100%\), [\d.]+/s, done$", stdout, re.M), stdout
    online = re.findall(r"^\d\d:\d\d:\d\d online spaars hopper seed 0 \[(\w+)\] score=-?[\d.]+: (\d+)/600 "
                        r"\((\d+)%\)(?:, [\d.]+/s, (?:ETA \d+m\d\ds|done))?$", stdout, re.M)
    assert len(online) >= 4, stdout  # the offline start and the evaluations at 200, 400 and 600 steps
    assert {phase for phase, *_ in online} >= {"latent"}
    assert online[-1][1:3] == ("600", "100")
    assert any("ETA" in line for line in stdout.splitlines() if "online spaars" in line)


def test_final_score_says_which_evaluations_it_averages(smoke_run) -> None:
    """The mean of the last 5 online evaluations; smoke has 3 (at 200, 400, 600 steps), and says so."""
    _, _, stdout = smoke_run
    assert re.search(r"final normalised score -?[\d.]+ \(mean of the last 3 online evaluations; offline start",
                     stdout), stdout


def test_export_takes_the_group_directory_with_one_seed(smoke_run) -> None:
    tmp, group, _ = smoke_run
    out = tmp / "bundle"
    proc = run_cli("export", str(group), "--onnx", "--out", str(out))
    assert f"wrote {out}" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["run_dir"] == str(group / "seed0")


def test_export_of_a_group_with_several_seeds_names_them(smoke_run, tmp_path) -> None:
    _, group, _ = smoke_run
    several = tmp_path / group.name
    shutil.copytree(group / "seed0", several / "seed0")
    shutil.copytree(group / "seed0", several / "seed1")
    proc = run_cli("export", str(several), "--onnx", "--out", str(tmp_path / "b"), check=False)
    assert proc.returncode == 2
    error = proc.stderr.strip()
    assert "\n" not in error and "2 seed runs (seed0, seed1)" in error and f"e.g. {several / 'seed0'}" in error
    assert not (tmp_path / "b").exists()


def test_data_collect_prints_plain_progress_lines(tmp_path) -> None:
    proc = run_cli("data", "collect", "--task", "hopper", "--quality", "random", "--steps", "300",
                   "--root", str(tmp_path), env={"SPAARS_PROGRESS_SECONDS": "0"})
    assert re.search(r"^\d\d:\d\d:\d\d rollout hopper: 300/300 \(100%\), [\d.]+/s, done$", proc.stdout, re.M), \
        proc.stdout
