"""`spaars-robot dashboard`: a local live view of the safety state, fed by the telemetry PUB stream.

A subscriber thread folds every record into a small aggregate (rates over the last records, counts,
a latency histogram, the last action against its limits); a stdlib HTTP server on a loopback
address serves one plain HTML/canvas page and pushes the aggregate to it with Server-Sent Events
at most `push_hz` times a second. Aggregating server-side keeps a 1 kHz stream from flooding the
browser, and no web framework or vendored JS is needed.
"""
from __future__ import annotations

import ipaddress
import json
import math
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import zmq

from spaars_robot.errors import SpaarsError
from spaars_robot.telemetry.dashboard_page import PAGE
from spaars_robot.telemetry.publisher import DEFAULT_TELEMETRY_ENDPOINT, TelemetrySubscriber
from spaars_robot.telemetry.record import SOURCES, TelemetryRecord

# Log-spaced latency bins in microseconds, 10 us .. 100 ms.
LATENCY_EDGES_US = [10.0 * 10 ** (i / 4) for i in range(17)]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class SafetyAggregate:
    """Everything the page shows, updated per record and read as one JSON snapshot."""

    def __init__(self, window: int = 500, series: int = 300) -> None:
        self._lock = threading.Lock()
        self.window: deque[str] = deque(maxlen=window)  # sources of the last `window` records
        self.support: deque[tuple[int, float | None]] = deque(maxlen=series)
        self.latency_total: deque[float] = deque(maxlen=window)
        self.records = 0
        self.by_source: Counter[str] = Counter()
        self.limit_hits: Counter[str] = Counter()
        self.events: deque[dict[str, Any]] = deque(maxlen=12)
        self.last: TelemetryRecord | None = None
        self.version = 0

    def add(self, record: TelemetryRecord) -> None:
        with self._lock:
            previous = self.last
            self.records += 1
            self.by_source[record.source] += 1
            self.window.append(record.source)
            self.limit_hits.update(record.limits)
            self.support.append((record.sequence, _finite(record.support_score)))
            if "total" in record.latency_us:
                self.latency_total.append(record.latency_us["total"])
            if record.source == "fallback" and (previous is None or previous.source != "fallback"):
                self._event(record, f"fallback to latent action (support {record.support_score:.3g} "
                                    f"> threshold {record.support_threshold:.3g})")
            if previous is not None and previous.watchdog != record.watchdog:
                self._event(record, f"watchdog {previous.watchdog} -> {record.watchdog}")
            self.last = record
            self.version += 1

    def _event(self, record: TelemetryRecord, text: str) -> None:
        self.events.appendleft({"sequence": record.sequence, "time": record.time, "text": text})

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            n = max(len(self.window), 1)
            share = {source: self.window.count(source) / n for source in SOURCES}
            hist = [0] * (len(LATENCY_EDGES_US) - 1)
            for micros in self.latency_total:
                for i in range(len(hist)):
                    if micros < LATENCY_EDGES_US[i + 1] or i == len(hist) - 1:
                        hist[i] += 1
                        break
            last = self.last
            return {
                "version": self.version,
                "records": self.records,
                "window": len(self.window),
                "share": share,
                "by_source": dict(self.by_source),
                "limit_hits": dict(self.limit_hits),
                "support_series": list(self.support),
                "latency_edges_us": LATENCY_EDGES_US,
                "latency_hist": hist,
                "events": list(self.events),
                "last": None if last is None else {
                    "sequence": last.sequence, "time": last.time, "source": last.source,
                    "gate_advantage": _finite(last.gate_advantage), "support_score": _finite(last.support_score),
                    "support_threshold": _finite(last.support_threshold),
                    "action": [_finite(v) for v in last.action], "action_low": last.action_low,
                    "action_high": last.action_high, "limits": last.limits, "watchdog": last.watchdog,
                    "latency_us": last.latency_us, "client": last.client, "observation_ood": last.observation_ood,
                },
            }


class Dashboard:
    """Subscribe to telemetry and serve the page; `start()` returns the URL, `stop()` joins threads."""

    def __init__(self, telemetry_endpoint: str = DEFAULT_TELEMETRY_ENDPOINT, host: str = "127.0.0.1",
                 port: int = 8765, push_hz: float = 10.0, context: zmq.Context | None = None) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise SpaarsError(f"the dashboard binds loopback only, got {host}; use an SSH tunnel to view remotely")
        self.telemetry_endpoint = telemetry_endpoint
        self.aggregate = SafetyAggregate()
        self.push_period = 1.0 / push_hz
        self._context = context
        self._stop = threading.Event()
        self._page = PAGE.encode()
        try:
            self._http = ThreadingHTTPServer((host, port), self._handler_class())
        except OSError as exc:
            raise SpaarsError(f"cannot serve the dashboard on {host}:{port}: {exc.strerror}") from exc
        self._http.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> str:
        subscriber = TelemetrySubscriber(self.telemetry_endpoint, self._context)
        self._threads = [
            threading.Thread(target=self._subscribe, args=(subscriber,), name="dashboard-sub", daemon=True),
            threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.1},
                             name="dashboard-http", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self.url

    def stop(self) -> None:
        self._stop.set()
        self._http.shutdown()
        self._http.server_close()
        for thread in self._threads:
            thread.join(timeout=2.0)

    def _subscribe(self, subscriber: TelemetrySubscriber) -> None:
        try:
            while not self._stop.is_set():
                record = subscriber.recv(timeout_ms=100)
                if record is not None:
                    self.aggregate.add(record)
        finally:
            subscriber.close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        dashboard = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return  # keep the terminal for the command's own output

            def do_GET(self) -> None:
                if self.path == "/":
                    self._send(200, "text/html; charset=utf-8", dashboard._page)
                elif self.path == "/snapshot":
                    self._send(200, "application/json", json.dumps(dashboard.aggregate.snapshot()).encode())
                elif self.path == "/events":
                    self._events()
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _events(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                sent_version, last_beat = -1, 0.0
                try:
                    while not dashboard._stop.is_set():
                        now = time.monotonic()
                        if dashboard.aggregate.version != sent_version:
                            snapshot = dashboard.aggregate.snapshot()
                            sent_version = snapshot["version"]
                            self.wfile.write(b"data: " + json.dumps(snapshot).encode() + b"\n\n")
                            self.wfile.flush()
                            last_beat = now
                        elif now - last_beat > 1.0:
                            self.wfile.write(b": keep-alive\n\n")
                            self.wfile.flush()
                            last_beat = now
                        time.sleep(dashboard.push_period)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the page was closed

        return Handler
