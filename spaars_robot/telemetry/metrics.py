"""Prometheus metrics for fleet and long-run views (anchors, section D: aggregates and alerts, not
per-tick traces, which go through the PUB stream).

Metric names (the Grafana dashboard in `deploy/grafana/spaars-robot.json` uses exactly these):

    spaars_requests_total{source}            requests served, by action source (raw/latent/fallback/hold)
    spaars_fallbacks_total                   support-monitor fallbacks to the latent action
    spaars_limit_hits_total{kind}            safety-limit activations by kind (safety.limits.LIMIT_KINDS)
    spaars_deadline_misses_total             control periods without a fresh reply (client side)
    spaars_watchdog_transitions_total{state} watchdog transitions, by state entered
    spaars_watchdog_state{state}             1 for the watchdog state a controller last reported, 0 for the others
    spaars_observation_ood_total             observations outside their safety bounds
    spaars_latency_seconds{stage}            per-stage latency histogram (decode, policy, safety, total ...)
    spaars_support_score / spaars_support_threshold   last support score and its threshold (gauges)
    spaars_build_info{bundle,bundle_sha256,task,protocol_version,version}   what is served (always 1)

The alert rules in `deploy/prometheus/spaars-robot-rules.yml` use them too; tests check both files against
this registry, so renaming a metric here fails them.
"""
from __future__ import annotations

import ipaddress
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from spaars_robot import __version__
from spaars_robot.errors import SpaarsError
from spaars_robot.safety.limits import LIMIT_KINDS
from spaars_robot.safety.watchdog import WatchdogState
from spaars_robot.telemetry.record import SOURCES, TelemetryRecord

# From 10 us (bare ZeroMQ echo) to 100 ms (the safe-stop timeout).
LATENCY_BUCKETS = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1)


class SafetyMetrics:
    """One set of metrics in its own registry (tests and several servers in one process never clash)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("spaars_requests", "Requests served, by action source", ["source"], registry=r)
        self.fallbacks = Counter("spaars_fallbacks", "Support-monitor fallbacks to the latent action", registry=r)
        self.limit_hits = Counter("spaars_limit_hits", "Safety-limit activations by kind", ["kind"], registry=r)
        self.deadline_misses = Counter("spaars_deadline_misses", "Control periods without a fresh reply",
                                       registry=r)
        self.watchdog_transitions = Counter("spaars_watchdog_transitions", "Watchdog transitions by state entered",
                                            ["state"], registry=r)
        self.watchdog_state = Gauge("spaars_watchdog_state", "1 for the watchdog state a controller last reported",
                                    ["state"], registry=r)
        self.build = Info("spaars_build", "What is served: bundle, its SHA-256, task, wire protocol, package version",
                          registry=r)
        self.observation_ood = Counter("spaars_observation_ood", "Observations outside their bounds", registry=r)
        self.latency = Histogram("spaars_latency_seconds", "Per-stage latency", ["stage"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.support_score = Gauge("spaars_support_score", "Last support score", registry=r)
        self.support_threshold = Gauge("spaars_support_threshold", "Support threshold", registry=r)
        for source in SOURCES:  # export zeros from the start so rate() works on the first scrape
            self.requests.labels(source=source)
        for kind in LIMIT_KINDS:
            self.limit_hits.labels(kind=kind)
        for state in WatchdogState:  # all 0 until a controller reports: nothing known yet
            self.watchdog_state.labels(state=state.value)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None  # bound port once serving

    def observe(self, record: TelemetryRecord) -> None:
        """Update every metric from one telemetry record (the server's per-request hook)."""
        self.requests.labels(source=record.source).inc()
        if record.source == "fallback":
            self.fallbacks.inc()
        for kind in record.limits:
            self.limit_hits.labels(kind=kind).inc()
        if record.observation_ood:
            self.observation_ood.inc()
        for stage, micros in record.latency_us.items():
            self.latency.labels(stage=stage).observe(micros * 1e-6)
        self.support_score.set(record.support_score)
        self.support_threshold.set(record.support_threshold)
        self._set_watchdog_state(record.watchdog)

    def deadline_miss(self, count: int = 1) -> None:
        self.deadline_misses.inc(count)

    def watchdog_transition(self, state: str) -> None:
        self.watchdog_transitions.labels(state=state).inc()
        self._set_watchdog_state(state)

    def _set_watchdog_state(self, state: str) -> None:
        """One-hot current state, so an alert can say "not running" without differencing counters."""
        for known in WatchdogState:
            self.watchdog_state.labels(state=known.value).set(1.0 if known.value == state else 0.0)

    def set_build_info(self, bundle: str, bundle_sha256: str, task: str, protocol_version: str) -> None:
        """Label every scrape with what is served, so Grafana and alerts can tell robots and rollouts apart."""
        self.build.info({"bundle": bundle, "bundle_sha256": bundle_sha256, "task": task,
                         "protocol_version": protocol_version, "version": __version__})

    def serve(self, port: int = 9108, host: str = "127.0.0.1") -> int:
        """Serve /metrics over HTTP on a loopback address; returns the bound port (0 picks a free one)."""
        if not ipaddress.ip_address(host).is_loopback:
            raise SpaarsError(f"metrics endpoint must bind a loopback address, got {host}; "
                              "put a reverse proxy in front for remote scraping")
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise SpaarsError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
        self.port = self._server.server_port
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
