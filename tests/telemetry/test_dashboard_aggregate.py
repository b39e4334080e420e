"""The dashboard's aggregate, fed records with exact times: what the page's new panels are computed from.

Exact numbers here (the browser tests check the same panels render, with timing slack): folded watchdog
flips and fallback onsets, the controller's own hold/deadline counters (totals and over the last
RECENT_S), limit-hit rates on the server clock, latency p50/p99 per stage, and a snapshot that stays
strict JSON when a server runs without a safety spec (infinite bounds).
"""
from __future__ import annotations

import json

import pytest

from spaars_robot.telemetry.dashboard import FOLD_GAP_S, RECENT_S, SafetyAggregate
from tests.telemetry.telemetry_helpers import make_record

T0 = 1_700_000_000.0


def test_repeated_watchdog_flips_fold_into_one_timestamped_line() -> None:
    aggregate = SafetyAggregate()
    states = ["running"] + ["hold", "running"] * 6  # 12 flips in 3 s
    for i, state in enumerate(states):
        aggregate.add(make_record(i + 1, time=T0 + 0.25 * i, watchdog=state, client="robot#1"))
    events = aggregate.snapshot()["events"]
    assert [e["text"] for e in events] == ["watchdog running <-> hold x12 in 2.8 s (now running)"]
    assert events[0]["time"] == T0 + 0.25 and events[0]["last_time"] == T0 + 3.0
    # Past the fold gap a flip starts a new line; a different pair of states never joins the flapping one.
    later = T0 + 3.0 + FOLD_GAP_S + 1
    for i, state in enumerate(["hold", "damp", "safe_stop"]):
        aggregate.add(make_record(100 + i, time=later + 0.1 * i, watchdog=state, client="robot#1"))
    assert [e["text"] for e in aggregate.snapshot()["events"]] == [
        "watchdog damp -> safe_stop", "watchdog hold -> damp", "watchdog running -> hold",
        "watchdog running <-> hold x12 in 2.8 s (now running)"]


def test_fallback_onsets_fold_with_their_last_support_score() -> None:
    aggregate = SafetyAggregate()
    for i in range(10):  # an onset every other record
        source = "fallback" if i % 2 else "raw"
        aggregate.add(make_record(i + 1, source, support_score=1.0 + i / 10, time=T0 + 0.1 * i))
    (event,) = aggregate.snapshot()["events"]
    assert event["text"] == "fallback to latent action x5 in 0.8 s (last: support 1.9 > threshold 1)"


def test_controller_counters_totals_recent_share_and_a_restarted_controller() -> None:
    aggregate = SafetyAggregate()
    assert aggregate.snapshot()["controller"] is None  # nothing reported yet: the page says so
    # 20 s at 10 reports/s; the controller holds 1 tick in 10 at first, 1 in 2 in the last 10 s.
    ticks = held = misses = 0
    for i in range(200):
        ticks += 1
        held += int(bool(i % 2) if i >= 100 else i % 10 == 0)
        misses = held
        aggregate.add(make_record(i + 1, time=T0 + 0.1 * i, client="robot#1",
                                  controller={"ticks": ticks, "held": held, "deadline_misses": misses}))
    c = aggregate.snapshot()["controller"]
    assert (c["ticks"], c["held"], c["deadline_misses"]) == (200, held, misses)
    assert c["hold_share"] == pytest.approx(held / 200)
    assert c["recent_span_s"] == pytest.approx(RECENT_S)
    assert c["recent_hold_share"] == 0.5 and c["recent_ticks"] == 100
    assert c["deadline_miss_rate"] == pytest.approx(c["recent_deadline_misses"] / RECENT_S)
    # A new controller process under the same name counts from zero again: no negative deltas.
    aggregate.add(make_record(1, time=T0 + 20.5, client="robot#2",
                              controller={"ticks": 3, "held": 1, "deadline_misses": 1}))
    c = aggregate.snapshot()["controller"]
    assert (c["ticks"], c["held"], c["deadline_misses"], c["recent_deadline_misses"]) == (3, 1, 1, 0)


def test_limit_hit_rates_cover_the_last_seconds_of_server_time() -> None:
    aggregate = SafetyAggregate()
    for i in range(300):  # 30 s at 10 Hz: rate limits in the first 15 s only, soft zone every other record
        limits = (["rate"] if i < 150 else []) + (["soft_zone"] if i % 2 else [])
        aggregate.add(make_record(i + 1, time=T0 + 0.1 * i, limits=limits))
    snapshot = aggregate.snapshot()
    assert snapshot["limit_hits"] == {"rate": 150, "soft_zone": 150}
    assert "rate" not in snapshot["limit_rates"]  # totals remember, the rate says it stopped
    assert snapshot["limit_rates"]["soft_zone"]["per_s"] == pytest.approx(5.0, rel=0.05)
    assert snapshot["limit_rates"]["soft_zone"]["share"] == pytest.approx(0.5, abs=0.02)


def test_latency_p50_p99_per_stage() -> None:
    aggregate = SafetyAggregate()
    for i in range(100):
        aggregate.add(make_record(i + 1, latency_us={"policy": float(i + 1), "safety": 7.0, "total": 100.0 + i}))
    stages = aggregate.snapshot()["latency_stages"]
    assert list(stages) == ["policy", "safety", "total"]  # pipeline order
    assert (stages["policy"]["p50"], stages["policy"]["p99"]) == (50.0, 99.0)
    assert (stages["total"]["p50"], stages["total"]["p99"]) == (149.0, 198.0)


def test_snapshot_is_strict_json_without_a_safety_spec() -> None:
    aggregate = SafetyAggregate()
    inf = float("inf")
    aggregate.add(make_record(1, action_low=[-inf] * 3, action_high=[inf] * 3, gate_advantage=float("nan"),
                              latency_us={"total": float("nan")}))
    text = json.dumps(aggregate.snapshot(), allow_nan=False)  # the browser's JSON.parse refuses Infinity/NaN
    assert json.loads(text)["last"]["action_high"] == [None] * 3


def test_stale_requests_of_an_older_session_are_skipped_not_shown_as_flips() -> None:
    """After a stall, requests of the old session that waited in the server's queue arrive mixed with the
    new session's first ones; a restarted server (sessions from 1 again) is not mistaken for that."""
    aggregate = SafetyAggregate()
    reports = [("robot#1", 100, 10, "running"), ("robot#1", 101, 11, "hold"), ("robot#2", 130, 25, "safe_stop"),
               ("robot#1", 110, 12, "hold"), ("robot#2", 131, 25, "running"), ("robot#1", 111, 13, "damp"),
               ("robot#1", 140, 25, "running")]  # the server restarted: session 1 again, counts ahead
    for i, (client, ticks, held, state) in enumerate(reports):
        aggregate.add(make_record(i + 1, time=T0 + i * 0.01, client=client, watchdog=state,
                                  controller={"ticks": ticks, "held": held, "deadline_misses": held}))
    snapshot = aggregate.snapshot()
    c = snapshot["controller"]
    assert (c["ticks"], c["held"], c["recent_ticks"], c["recent_held"]) == (140, 25, 40, 15)
    assert [e["text"] for e in snapshot["events"]] == [
        "watchdog safe_stop -> running", "controller missed 15 deadlines in 10 ms", "watchdog hold -> safe_stop",
        "watchdog running -> hold"]
