"""`spaars-robot plot` draws curves from run directories or committed run summaries, and rejects junk clearly."""
from __future__ import annotations

import json
from pathlib import Path

from spaars_robot.train.plots import collect_curves, seed_matrix
from tests.conftest import REPO, run_cli


def _summary(tmp: Path, seed: int, scores: list[float], algo: str = "spaars", tag: str = "") -> Path:
    curve = [{"step": 5000 * i, "normalized_mean": v, "train_raw_rate": 0.5, "phase": "latent", "falls": 0,
              "out_of_support_rate": 0.0, "eval_raw_rate": 0.0} for i, v in enumerate(scores)]
    path = tmp / f"hopper_{algo}_short_seed{seed}.json"
    path.write_text(json.dumps({"task": "hopper", "algo": algo, "protocol": "short", "seed": seed, "bf16": False,
                                "tag": tag, "variant": {"concurrent_bc": True, "hard_switch": False}, "curve": curve}))
    return path


def test_summaries_group_by_run_name_with_one_curve_per_seed(tmp_path):
    paths = [_summary(tmp_path, 0, [10, 20]), _summary(tmp_path, 1, [30, 40]),
             _summary(tmp_path, 0, [5, 6], algo="iql", tag="set-abc")]
    groups = collect_curves(paths)
    assert sorted(groups) == ["hopper-iql-set-abc-short", "hopper-spaars-short"]
    assert [[r["normalized_mean"] for r in rows] for rows in groups["hopper-spaars-short"]] == [["10", "20"], ["30", "40"]]


def test_plot_cli_from_committed_summaries(tmp_path):
    committed = sorted((REPO / "benchmarks" / "results" / "train").glob("hopper_*_short_seed*.json"))
    assert committed, "no committed hopper summaries"
    out = tmp_path / "curves.png"
    run_cli("plot", *map(str, committed), "--out", str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_plot_rejects_a_corrupt_summary_in_one_line(tmp_path):
    bad = tmp_path / "hopper_spaars_short_seed0.json"
    bad.write_text('{"task": "hopper", "curve": [')
    proc = run_cli("plot", str(bad), "--out", str(tmp_path / "x.png"), check=False)
    assert proc.returncode == 2 and "not a run summary" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_gate_share_starts_after_the_first_training_steps_scores_at_step_0(tmp_path):
    groups = collect_curves([_summary(tmp_path, 0, [10, 20, 30]), _summary(tmp_path, 1, [30, 40, 50])])
    runs = groups["hopper-spaars-short"]
    steps, scores = seed_matrix(runs, "normalized_mean")
    assert steps == [0, 5000, 10000] and scores.tolist() == [[10, 20, 30], [30, 40, 50]]
    steps, share = seed_matrix(runs, "train_raw_rate")
    assert steps == [5000, 10000] and share.shape == (2, 2)
