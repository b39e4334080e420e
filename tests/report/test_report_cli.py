"""`spaars-robot report` through the real CLI: what it writes, what it reads, and one-line refusals."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from spaars_robot.report.build import BEGIN, END
from spaars_robot.report.runs import find_runs
from spaars_robot.train.runner import METRIC_FIELDS
from tests.conftest import REPO, run_cli

COMMITTED = REPO / "benchmarks" / "results" / "train"


def _copy(tmp: Path, *names: str) -> Path:
    folder = tmp / "summaries"
    folder.mkdir()
    for name in names:
        shutil.copy(COMMITTED / name, folder / name)
    return folder


def _run_dir(root: Path, summary_file: str, adv_scale: float) -> Path:
    """A finished seed run directory as the runner leaves it: summary.json and metrics.csv (with adv_scale)."""
    summary = json.loads((COMMITTED / summary_file).read_text())
    seed_dir = root / f"{summary['task']}-spaars-short" / f"seed{summary['seed']}"
    seed_dir.mkdir(parents=True)
    (seed_dir / "summary.json").write_text(json.dumps(summary))
    with open(seed_dir / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRIC_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**row, "adv_scale": adv_scale * (1 + i)} for i, row in enumerate(summary["curve"]))
    return seed_dir


def test_report_writes_tables_figures_and_updates_a_document(tmp_path):
    folder = _copy(tmp_path, *[f"hopper_{a}_short_seed{s}.json" for a in ("spaars", "iql") for s in (0, 1, 2)])
    doc = tmp_path / "DOC.md"
    doc.write_text(f"# Doc\n\nbefore\n\n{BEGIN}\nold\n{END}\n\nafter\n")
    out = tmp_path / "report"
    proc = run_cli("report", str(folder), "--out", str(out), "--no-render", "--update", str(doc))
    assert "6 runs" in proc.stdout and "not drawn: rollout GIFs: --no-render" in proc.stdout
    for name in ("report.md", "learning_curves.png", "gate.png", "performance_profile.png"):
        assert (out / name).stat().st_size > 1000, name
    text = doc.read_text()
    assert text.startswith("# Doc\n\nbefore\n\n") and text.endswith("\n\nafter\n") and "old" not in text
    assert "| hopper | short | spaars | 0, 1, 2 |" in text and "![learning_curves](report/learning_curves.png)" in text
    assert "IQM final [95% CI]" in (out / "report.md").read_text()


def test_a_sweep_root_counts_each_run_once_from_its_run_directory(tmp_path):
    """A sweep's runs root has run directories and summaries/ for the same runs: each run is read once, and
    the run directories' metrics.csv give the gate figure its mean-|advantage| row."""
    root = tmp_path / "runs"
    _copy(root.parent, "hopper_spaars_short_seed0.json", "hopper_spaars_short_seed1.json").rename(
        root.parent / "moved")
    (root).mkdir()
    shutil.move(root.parent / "moved", root / "summaries")
    for seed in (0, 1):
        _run_dir(root, f"hopper_spaars_short_seed{seed}.json", adv_scale=0.01)
    runs = find_runs([root])
    assert len(runs) == 2 and all(r.run_dir is not None for r in runs)
    out = tmp_path / "report"
    proc = run_cli("report", str(root), "--out", str(out), "--no-render")
    assert "2 runs" in proc.stdout and "mean |advantage|" not in proc.stdout  # drawn, not listed as missing
    assert (out / "gate.png").stat().st_size > 1000


def test_the_same_run_with_different_results_is_refused(tmp_path):
    folder = _copy(tmp_path, "hopper_spaars_short_seed0.json")
    other = tmp_path / "other"
    other.mkdir()
    changed = json.loads((folder / "hopper_spaars_short_seed0.json").read_text()) | {"final_normalized": 1.0}
    (other / "hopper_spaars_short_seed0.json").write_text(json.dumps(changed))
    proc = run_cli("report", str(folder), str(other), "--no-render", "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2 and "same run" in proc.stderr


@pytest.mark.parametrize("case, content, message", [
    ("corrupt", '{"task": "hopper", "curve": [', "not a run summary (JSONDecodeError"),
    ("missing-fields", '{"task": "hopper", "algo": "spaars", "seed": 0}', "missing protocol, variant"),
    ("bad-curve", None, "curve rows lack normalized_mean"),
    ("bad-switch", None, "'switch' must be a list of records with an integer step"),
    ("empty-dir", "", "no finished runs here"),
])
def test_bad_input_is_one_clear_line(tmp_path, case, content, message):
    folder = tmp_path / "in"
    folder.mkdir()
    if case == "bad-curve":
        summary = json.loads((COMMITTED / "hopper_spaars_short_seed0.json").read_text())
        summary["curve"][3].pop("normalized_mean")
        content = json.dumps(summary)
    if case == "bad-switch":  # the switch table reads its step: a hand-edited summary must not be a traceback
        summary = json.loads((COMMITTED / "hopper_spaars_short_seed0.json").read_text())
        summary["switch"] = [{"step": "50k", "reason": "hard cap"}]
        content = json.dumps(summary)
    if case != "empty-dir":
        (folder / "hopper_spaars_short_seed0.json").write_text(content)
    proc = run_cli("report", str(folder), "--no-render", "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 or len(proc.stderr.strip()) < 400
    assert not (tmp_path / "r" / "report.md").exists()


def test_unknown_labels_are_refused_with_the_known_ones(tmp_path):
    folder = _copy(tmp_path, "hopper_spaars_short_seed0.json")
    proc = run_cli("report", str(folder), "--labels", "spar", "--no-render", "--out", str(tmp_path / "r"),
                   check=False)
    assert proc.returncode == 2 and "no runs labelled spar (labels here: spaars)" in proc.stderr


def test_report_of_a_real_trained_run_renders_its_checkpoint(tmp_path, tiny_hopper_dataset):
    """The `smoke` protocol through the real `train`, then `report` on its runs root: the run is read from its
    directory (metrics.csv's advantage is drawn) and its checkpoint is rendered as the run's policy."""
    runs = tmp_path / "runs"
    run_cli("train", "--task", "hopper", "--dataset", str(tiny_hopper_dataset), "--algo", "spaars", "--seeds", "0",
            "--protocol", "smoke", "--runs-root", str(runs), "--safety-spec", "none")
    out = tmp_path / "report"
    proc = run_cli("report", str(runs), "--out", str(out), "--gif-steps", "10")
    assert "1 run ->" in proc.stdout and "mean |advantage|" not in proc.stdout
    assert "hopper rollout, checkpoint" in proc.stdout and "no safety layer" in proc.stdout
    assert (out / "rollout_hopper.gif").read_bytes()[:6] == b"GIF89a"
