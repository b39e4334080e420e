"""The simulated robot against a live server: a real Hopper episode, and sim-to-sim agreement with torch."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from spaars_robot.runtime.client import Client
from spaars_robot.runtime.sim_client import InProcessPolicy, run_sim, task_schema
from spaars_robot.safety.limits import SafetyLayer
from spaars_robot.safety.spec import load_safety_spec

pytestmark = pytest.mark.timeout(60)


def test_realtime_hopper_episode_against_live_server(live_server, hopper):
    with Client(live_server.bound[0], task_schema(hopper), timeout_s=0.008) as client:
        summary = run_sim(client, hopper, episodes=2, seed=0, max_steps=40)
    assert [ep.seed for ep in summary.episodes] == [0, 1]
    assert summary.steps == sum(ep.steps for ep in summary.episodes) > 2
    for source, share in summary.source_share.items():  # the printed shares are the episodes' own counts
        assert share == pytest.approx(sum(ep.sources[source] for ep in summary.episodes) / summary.steps)
    ep = summary.episodes[0]
    assert ep.normalized_score == pytest.approx(hopper.normalized_score(ep.episode_return))
    # Misses depend on the machine's load (6 of 53 periods with two training runs beside the suite on 2 cores): the
    # behaviour under test is that each is counted and held, never hidden; the bound only catches a server that
    # stopped answering (which misses every period). Miss rates are measured in benchmarks/serve_latency.py.
    assert sum(e.sources["hold"] for e in summary.episodes) >= summary.deadline_misses
    assert summary.deadline_misses < summary.steps // 2
    # the per-episode columns add up to the summary line (they once added late ticks to the misses)
    assert sum(e.deadline_misses for e in summary.episodes) == summary.deadline_misses
    assert sum(e.late_ticks for e in summary.episodes) == summary.late_ticks
    assert summary.max_applied_age_ms <= 1000 / hopper.control_rate_hz  # never a stale reply
    # the limits the controller reports are the ones the server applied to the replies it used
    served = dict(live_server.safety.counts)
    if summary.stale_replies == 0:
        assert summary.limit_counts == served
    else:  # a reply dropped as stale was limited by the server but never applied
        assert all(summary.limit_counts[kind] <= served[kind] for kind in served)


def test_served_bundle_matches_in_process_torch_policy(live_server, hopper, bundle, stack):
    """Sim-to-sim: same seeds, same decisions, same returns, whether the policy runs in ORT behind ZMQ or in torch."""
    with Client(live_server.bound[0], task_schema(hopper), timeout_s=1.0) as client:
        served = run_sim(client, hopper, episodes=2, seed=3, realtime=False, max_steps=60)
    layer = SafetyLayer(load_safety_spec("hopper"), 3, 11)  # the same limits the served bundle runs under
    local = run_sim(InProcessPolicy(stack, bundle.manifest, layer), hopper, episodes=2, seed=3, realtime=False, max_steps=60)
    for a, b in zip(served.episodes, local.episodes):
        assert a.steps == b.steps and a.sources == b.sources
        assert a.episode_return == pytest.approx(b.episode_return, abs=1e-3)
    assert served.limit_counts == local.limit_counts


def test_demo_command_runs_end_to_end(bundle):
    result = subprocess.run([sys.executable, "-m", "spaars_robot.cli", "demo", "--bundle", str(bundle.path),
                             "--episodes", "1"], check=False, capture_output=True, text=True, timeout=50,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "normalised score" in result.stdout and "server stopped cleanly (exit 0)" in result.stdout
    assert "safety limits:" in result.stdout and "wait_handshake -> running: fresh handshake" in result.stdout


def test_demo_without_bundle_is_one_clear_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "spaars_robot.cli", "demo", "--bundle", str(tmp_path / "none")],
                            check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "not found" in result.stderr and "Traceback" not in result.stderr


def test_printed_summary_says_how_many_transitions_it_leaves_out(capsys):
    from spaars_robot.commands.runtime import MAX_TRANSITIONS_PRINTED, print_sim_summary
    from spaars_robot.runtime.sim_client import EpisodeResult, SimSummary, TransitionLog

    transitions = [TransitionLog(t_s=0.01 * i, previous="running", state="hold", reason="no reply")
                   for i in range(MAX_TRANSITIONS_PRINTED + 9)]
    sources = {"raw": 5, "latent": 5, "fallback": 0, "hold": 0}
    summary = SimSummary(task="hopper", episodes=[EpisodeResult(seed=0, steps=10, episode_return=1.0,
                                                                normalized_score=1.0, deadline_misses=2,
                                                                late_ticks=1, sources=sources)],
                         mean_return=1.0, mean_normalized_score=1.0, deadline_misses=2, late_ticks=1, steps=10,
                         source_share={k: v / 10 for k, v in sources.items()}, fallbacks=0,
                         limit_counts={}, watchdog_transitions=transitions, stale_replies=0, max_applied_age_ms=0.0,
                         rtt_p50_us=1.0, rtt_p99_us=2.0)
    print_sim_summary(summary)
    out = capsys.readouterr().out
    shown = [line for line in out.splitlines() if "running -> hold" in line]
    assert f"watchdog transitions ({len(transitions)}, the first {len(shown)} shown)" in out
    assert f"... {len(transitions) - len(shown)} more" in out
