"""Paired per-seed differences and the per-seed switch table: the right pairs, the right arithmetic.

Pinned against the committed 5-seed summaries (numbers checked by hand from their finals), and on hand-built
runs for the rules a table cannot show at a glance: a variant is read against its own default, a dataset never
pairs with another dataset's runs, a tagged run pairs with the baseline under its own tag, seeds pair only with
the same seed, and a cap is not a decision.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from spaars_robot.report.paired import comparisons, paired_row, paired_table
from spaars_robot.report.runs import Run, find_runs
from spaars_robot.report.switch_table import switch_facts, switch_table
from spaars_robot.report.tables import group_runs
from tests.conftest import REPO

COMMITTED = REPO / "benchmarks" / "results" / "train"


@pytest.fixture(scope="module")
def committed():
    return group_runs(find_runs([COMMITTED]))


def _template(groups) -> dict:
    return groups[("hopper", "short", "spaars")][0].summary


def _run(template: dict, algo: str, seed: int, final: float, **extra) -> Run:
    summary = {**copy.deepcopy(template), "algo": algo, "seed": seed, "final_normalized": final, "tag": "",
               "variant": {**template["variant"], "concurrent_bc": True, "hard_switch": False}, **extra}
    return Run(summary, Path(f"{algo}-{seed}.json"))


def test_committed_spaars_minus_raw_is_the_difference_of_the_per_seed_finals(committed):
    spaars = {r.seed: r.summary["final_normalized"] for r in committed[("hopper", "short", "spaars")]}
    raw = {r.seed: r.summary["final_normalized"] for r in committed[("hopper", "short", "raw")]}
    row = paired_row(committed[("hopper", "short", "spaars")], committed[("hopper", "short", "raw")])
    assert row["seeds"] == [0, 1, 2, 3, 4]
    assert row["differences"] == pytest.approx([spaars[s] - raw[s] for s in range(5)])
    lines = paired_table(committed)
    assert ("| hopper | short | spaars | raw | s0 +0.4 / s1 -0.3 / s2 +6.0 / s3 -22.8 / s4 -2.2 | -3.8 ± 13.7 | "
            "2 of 5 | 0.79x | -5.8 ± 23.7 |") in lines
    # offline runs acted on nothing online: no safety ratio that would read as perfectly safe
    assert ("| hopper | offline | spar | bc | s0 +25.3 / s1 +8.5 / s2 +15.9 / s3 +3.4 / s4 -3.8 | +9.9 ± 13.9 | "
            "4 of 5 | n/a | n/a |") in lines


def test_pairs_are_read_against_the_method_baselines_and_the_variants_own_default(committed):
    pairs = {(key[2], base[2]) for key, base in comparisons(committed) if key[0] == "hopper"}
    assert {("spaars", "raw"), ("spaars", "latent"), ("spaars", "iql"), ("spaars-hard-switch", "spaars"),
            ("spar", "bc"), ("spar", "iql")} <= pairs
    # a dataset only pairs with its own dataset's runs
    assert ("spar-on-medium-replay", "bc-on-medium-replay") in pairs
    assert ("spar-on-medium-replay", "bc") not in pairs
    # baselines are not compared with the method
    assert not any(label in ("raw", "latent", "iql", "bc") for label, _ in pairs)


def test_only_common_seeds_pair_and_disjoint_seeds_give_no_row(committed):
    template = _template(committed)
    runs = [_run(template, "spaars", 0, 90.0), _run(template, "spaars", 1, 80.0),
            _run(template, "raw", 1, 70.0), _run(template, "raw", 2, 10.0), _run(template, "latent", 3, 60.0)]
    groups = group_runs(runs)
    pairs = comparisons(groups)
    assert [(k[2], b[2]) for k, b in pairs] == [("spaars", "raw")]  # latent ran seed 3 only: nothing in common
    row = paired_row(groups[pairs[0][0]], groups[pairs[0][1]])
    assert row["seeds"] == [1] and row["differences"] == [10.0] and row["ahead"] == 1


def test_a_tagged_run_pairs_with_the_baseline_run_under_the_same_tag(committed):
    """Kitchen's grid: SPAARS-SUPE and SUPE both run with `set-88f7a43f` (same settings), no untagged SUPE exists."""
    template = _template(committed)
    runs = [_run(template, "spaars-supe", 0, 18.5, tag="set-88f7a43f"),
            _run(template, "spaars-supe", 1, 18.5, tag="set-88f7a43f"),
            _run(template, "supe", 0, 22.5, tag="set-88f7a43f"), _run(template, "supe", 1, 10.0, tag="set-88f7a43f"),
            _run(template, "supe", 0, 50.0, tag="set-00000000")]  # other settings: never its baseline
    groups = group_runs(runs)
    (key, base), = comparisons(groups)
    assert (key[2], base[2]) == ("spaars-supe-set-88f7a43f", "supe-set-88f7a43f")
    row = paired_row(groups[key], groups[base])
    assert row["differences"] == pytest.approx([-4.0, 8.5]) and row["ahead"] == 1


def test_switch_table_tells_a_cap_from_a_decision_and_measures_the_dip(committed):
    template = _template(committed)
    curve = [dict(r) for r in template["curve"]]
    for row in curve:
        row["normalized_mean"] = 80.0 if row["step"] <= 40000 else 50.0
        row["eval_raw_rate"] = 0.0 if row["step"] <= 40000 else 0.5
        row["out_of_support_rate"] = 0.01 if row["step"] <= 40000 else 0.04
    evidence = {"step": 40000, "reason": "plateau and calibration: return slope t -0.14 < 2.35"}
    cap = {"step": 50000, "reason": "hard cap t_max=50000 reached at step 50000; checks: ..."}
    runs = [_run(template, "spaars", 0, 50.0, curve=curve, switch=[evidence]),
            _run(template, "spaars", 1, 50.0, curve=curve, switch=[cap])]
    facts = [switch_facts(r) for r in runs]
    assert facts[0]["on_evidence"] and not facts[1]["on_evidence"]
    assert (facts[0]["last_latent"], facts[0]["first_gated"]) == (80.0, 50.0)
    assert facts[1]["last_latent"] == 50.0  # its 45k and 50k evaluations are already below the 40k mark
    assert facts[0]["raw_share_after"] == pytest.approx(0.5) and facts[0]["oos_after"] == pytest.approx(0.04)
    line = next(line for line in switch_table(group_runs(runs)) if line.startswith("| hopper"))
    assert "| s0 40k / s1 50k (cap) | 1 of 2 | s0 80.0 -> 50.0 / s1 50.0 -> 50.0 | -15.0 ± 190.6 | 50.0 ± 0.0% |" \
        in line
    assert switch_facts(_run(template, "raw", 0, 1.0, switch=[])) is None
    # a switch record without a logged reason is not counted as a decision on evidence
    unlogged = _run(template, "spaars", 2, 50.0, curve=curve, switch=[{"step": 40000}])
    assert not switch_facts(unlogged)["on_evidence"]
    assert "s2 40k (no reason logged)" in switch_table(group_runs([unlogged]))[-1]
