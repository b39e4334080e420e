"""Telemetry over real transports: ZeroMQ PUB->SUB, MCAP write/read, Prometheus scraped over HTTP."""
from __future__ import annotations

import math
import time
import urllib.request
from pathlib import Path

import pytest
import zmq

from spaars_robot.errors import SpaarsError
from spaars_robot.telemetry.mcap_log import McapRecorder, read_mcap
from spaars_robot.telemetry.metrics import SafetyMetrics
from spaars_robot.telemetry.publisher import TelemetryPublisher, TelemetrySubscriber
from tests.telemetry.telemetry_helpers import make_record


def test_pub_sub_round_trip_skips_malformed_messages() -> None:
    context = zmq.Context()
    publisher = TelemetryPublisher("tcp://127.0.0.1:*", context)
    subscriber = TelemetrySubscriber(publisher.endpoint, context)
    sent = [make_record(i, "fallback" if i == 3 else "raw") for i in range(5)]
    received = []
    deadline = time.monotonic() + 5.0
    # PUB/SUB drops everything before the subscription lands ("slow joiner"): publish until seen.
    while not received and time.monotonic() < deadline:
        publisher.publish(sent[0])
        first = subscriber.recv(timeout_ms=50)
        if first is not None:
            received.append(first)
    publisher.socket.send(b"\xc1 not msgpack")
    for record in sent[1:]:
        publisher.publish(record)
    while len(received) < 5 and time.monotonic() < deadline:
        record = subscriber.recv(timeout_ms=200)
        if record is not None and (record.sequence != 0 or not received):
            received.append(record)
    assert [r.sequence for r in received] == [0, 1, 2, 3, 4]
    assert received[3].source == "fallback" and received[3] == sent[3]
    assert subscriber.malformed == 1
    subscriber.close()
    publisher.close()
    context.term()


def test_mcap_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run.mcap"
    recorder = McapRecorder(path)
    records = [make_record(i, "hold" if i % 4 == 0 else "raw", support_score=float("inf") if i == 2 else 0.5)
               for i in range(50)]
    for record in records:
        recorder.write(record)
    recorder.close()
    back = list(read_mcap(path))
    assert len(back) == 50
    assert math.isinf(back[2].support_score)
    back[2].support_score = records[2].support_score = 0.0
    assert back == records


def test_truncated_mcap_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.mcap"
    recorder = McapRecorder(path)
    for i in range(20):
        recorder.write(make_record(i))
    recorder.close()
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(SpaarsError, match="not a readable MCAP telemetry recording"):
        list(read_mcap(path))


def test_prometheus_endpoint_scraped_over_http() -> None:
    metrics = SafetyMetrics()
    port = metrics.serve(port=0)
    try:
        metrics.observe(make_record(1, "raw"))
        metrics.observe(make_record(2, "fallback", limits=["rate", "bounds"]))
        metrics.observe(make_record(3, "fallback", limits=["rate"], observation_ood=True))
        metrics.deadline_miss()
        metrics.watchdog_transition("hold")
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        metrics.close()
    assert 'spaars_requests_total{source="fallback"} 2.0' in body
    assert 'spaars_requests_total{source="latent"} 0.0' in body
    assert "spaars_fallbacks_total 2.0" in body
    assert 'spaars_limit_hits_total{kind="rate"} 2.0' in body
    assert 'spaars_limit_hits_total{kind="bounds"} 1.0' in body
    assert "spaars_deadline_misses_total 1.0" in body
    assert "spaars_observation_ood_total 1.0" in body
    assert 'spaars_watchdog_transitions_total{state="hold"} 1.0' in body
    assert 'spaars_latency_seconds_count{stage="total"} 3.0' in body
    assert 'spaars_latency_seconds_bucket{le="5e-05",stage="policy"} 3.0' in body


def test_metrics_refuse_non_loopback() -> None:
    with pytest.raises(SpaarsError, match="loopback"):
        SafetyMetrics().serve(port=0, host="0.0.0.0")


def test_grafana_dashboard_uses_only_exported_metric_names() -> None:
    import json
    import re

    from prometheus_client import generate_latest

    metrics = SafetyMetrics()
    metrics.observe(make_record(1, "fallback", limits=["rate"]))
    metrics.deadline_miss()
    metrics.watchdog_transition("hold")
    exported = set(re.findall(r"^(spaars_\w+?)(?:\{| )", generate_latest(metrics.registry).decode(), re.MULTILINE))
    dashboard = json.loads((Path(__file__).parents[2] / "deploy/grafana/spaars-robot.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"spaars_\w+", target["expr"])}
    assert used and used <= exported, used - exported


def test_hook_publishes_records_and_updates_metrics(tmp_path: Path) -> None:
    from spaars_robot.telemetry.hook import TelemetryHook

    context = zmq.Context()
    hook = TelemetryHook(TelemetryPublisher("tcp://127.0.0.1:*", context, recorder=McapRecorder(tmp_path / "h.mcap")),
                         SafetyMetrics())
    for i in range(3):
        hook(make_record(i, "fallback" if i == 1 else "raw"))
    assert hook.metrics.fallbacks._value.get() == 1.0
    hook.close()
    assert [r.sequence for r in read_mcap(tmp_path / "h.mcap")] == [0, 1, 2]
    context.term()
