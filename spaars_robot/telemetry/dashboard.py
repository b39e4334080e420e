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
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import zmq

from spaars_robot.errors import SpaarsError
from spaars_robot.telemetry.dashboard_page import PAGE
from spaars_robot.telemetry.publisher import DEFAULT_TELEMETRY_ENDPOINT, TelemetrySubscriber
from spaars_robot.telemetry.record import SOURCES, TelemetryRecord

# Log-spaced latency bins in microseconds, 10 us .. 100 ms.
LATENCY_EDGES_US = [10.0 * 10 ** (i / 4) for i in range(17)]
# The serving stages in pipeline order (`serve` measures them; docs/telemetry.md, `latency_us`).
LATENCY_STAGES = ("decode", "policy", "decide", "safety", "encode", "total")
RECENT_S = 10.0  # limit-hit rates, deadline-miss rate and the controller's recent hold share: last 10 s
FOLD_GAP_S = 5.0  # an event repeating within this many seconds of its last occurrence joins the same line


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (p99 of 500 samples is the 5th largest)."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass
class _Counts:
    """One controller's cumulative counters as it reported them (telemetry field `controller`)."""

    time: float
    ticks: int | None
    held: int | None
    deadline_misses: int


@dataclass
class _Controller:
    """Per controller (client name, across its sessions): its watchdog state, session, last RECENT_S of counts.

    The counters are the controller's own (since it started), so they are shown as it counts them, and a
    re-handshake (new session, same process) does not restart them.
    """

    watchdog: str
    session: int
    history: deque[_Counts] = field(default_factory=deque)

    def behind(self, counts: _Counts | None) -> bool:
        """Whether `counts` are older than the latest ones (fewer ticks; fewer misses when ticks are unknown)."""
        if counts is None or not self.history:
            return False
        last = self.history[-1]
        if counts.ticks is not None and last.ticks is not None:
            return counts.ticks < last.ticks
        return counts.deadline_misses < last.deadline_misses

    def add(self, counts: _Counts) -> int:
        """Append one report (a drop restarts: a new controller process); returns the new deadline misses."""
        if self.behind(counts):
            self.history.clear()
        last = self.history[-1] if self.history else None
        self.history.append(counts)
        while len(self.history) >= 2 and self.history[1].time <= counts.time - RECENT_S:
            self.history.popleft()  # keep one report at or before the window start as the baseline
        return 0 if last is None else max(counts.deadline_misses - last.deadline_misses, 0)


class SafetyAggregate:
    """Everything the page shows, updated per record and read as one JSON snapshot."""

    def __init__(self, window: int = 500, series: int = 300) -> None:
        self._lock = threading.Lock()
        self.window: deque[str] = deque(maxlen=window)  # sources of the last `window` records
        self.support: deque[tuple[int, float | None]] = deque(maxlen=series)
        self.latency: dict[str, deque[float]] = {}  # stage -> microseconds of the last `window` records
        self._window_size = window
        self.recent_limits: deque[tuple[float, list[str]]] = deque()  # (time, limits) of the last RECENT_S
        self.first_time: float | None = None
        self.records = 0
        self.by_source: Counter[str] = Counter()
        self.limit_hits: Counter[str] = Counter()
        self.controllers: dict[str, _Controller] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=20)
        self.last: TelemetryRecord | None = None
        self.version = 0

    def add(self, record: TelemetryRecord) -> None:
        with self._lock:
            previous = self.last
            now = record.time
            if self.first_time is None:
                self.first_time = now
            self.records += 1
            self.by_source[record.source] += 1
            self.window.append(record.source)
            self.limit_hits.update(record.limits)
            self.recent_limits.append((now, record.limits))
            while self.recent_limits[0][0] <= now - RECENT_S:
                self.recent_limits.popleft()
            self.support.append((record.sequence, _finite(record.support_score)))
            for stage, micros in record.latency_us.items():
                self.latency.setdefault(stage, deque(maxlen=self._window_size)).append(micros)
            if record.source == "fallback" and (previous is None or previous.source != "fallback"):
                self._event(record, "fallback", "fallback to latent action",
                            f"support {record.support_score:.3g} > threshold {record.support_threshold:.3g}")
            self._controller(record)
            self.last = record
            self.version += 1

    def _controller(self, record: TelemetryRecord) -> None:
        """Watchdog flips and deadline misses per controller (a client name without its `#session`).

        After a stalled server resumes, requests that waited in its queue from the controller's older
        sessions arrive mixed with the new session's: their state and counts are older than what the page
        already shows (older session, counts behind), so they are skipped rather than shown as flips.
        """
        name, _, session_text = record.client.partition("#")
        session = int(session_text) if session_text.isdigit() else 0
        counts = None if "deadline_misses" not in record.controller else _Counts(
            record.time, record.controller.get("ticks"), record.controller.get("held"),
            record.controller["deadline_misses"])
        controller = self.controllers.get(name)
        if controller is None:
            controller = self.controllers[name] = _Controller(record.watchdog, session)
        elif session < controller.session and (counts is None or controller.behind(counts)):
            return  # a stale request of an older session (a restarted server numbers sessions from 1 again)
        controller.session = session
        if controller.watchdog != record.watchdog:
            pair = "|".join(sorted((controller.watchdog, record.watchdog)))
            self._event(record, f"watchdog {pair} {name}", f"watchdog {controller.watchdog} -> {record.watchdog}",
                        flip=(controller.watchdog, record.watchdog))
            controller.watchdog = record.watchdog
        if counts is not None:
            new_misses = controller.add(counts)
            if new_misses > 0:
                self._event(record, f"deadline {name}", "controller missed", count=new_misses)

    def _event(self, record: TelemetryRecord, key: str, text: str, detail: str = "", *, count: int = 1,
               flip: tuple[str, str] | None = None) -> None:
        """Add an event, or fold it into the same kind's line when that one last happened within FOLD_GAP_S.

        A flapping link gives `running <-> hold x12 in 3.0 s` instead of 24 lines that push every
        other event out of the list.
        """
        for i, event in enumerate(self.events):  # newest first
            if event["last_time"] < record.time - FOLD_GAP_S:
                break
            if event["key"] == key:
                del self.events[i]
                event.update(count=event["count"] + count, last_time=record.time, last_sequence=record.sequence,
                             detail=detail or event["detail"])
                if flip is not None:
                    event["state"] = flip[1]
                self.events.appendleft(event)
                return
        self.events.appendleft({"key": key, "kind": key.split(" ", 1)[0], "text": text, "detail": detail,
                                "count": count, "time": record.time, "last_time": record.time,
                                "sequence": record.sequence, "last_sequence": record.sequence,
                                "flip": list(flip) if flip else None, "state": flip[1] if flip else None})

    @staticmethod
    def _event_line(event: dict[str, Any]) -> str:
        """The text the page prints for one (possibly folded) event."""
        seconds = event["last_time"] - event["time"]
        span = f" in {seconds:.1f} s" if seconds >= 0.1 else f" in {seconds * 1e3:.0f} ms"
        detail = f" ({event['detail']})" if event["detail"] else ""
        if event["kind"] == "deadline":
            return f"controller missed {_plural(event['count'], 'deadline')}" + (
                span if event["last_time"] > event["time"] else "")
        if event["count"] == 1:
            return event["text"] + detail
        if event["flip"] is not None:
            a, b = event["flip"]
            return f"watchdog {a} <-> {b} x{event['count']}{span} (now {event['state']})"
        return f"{event['text']} x{event['count']}{span} (last: {event['detail']})" if detail else \
            f"{event['text']} x{event['count']}{span}"

    def _recent(self) -> tuple[float, dict[str, dict[str, float]]]:
        """Limit hits over the last RECENT_S of server time: per kind, hits per second and share of requests."""
        if not self.recent_limits or self.first_time is None:
            return RECENT_S, {}
        now = self.recent_limits[-1][0]
        span = min(RECENT_S, now - self.first_time)
        counts: Counter[str] = Counter()
        for _, limits in self.recent_limits:
            counts.update(set(limits))
        n = len(self.recent_limits)
        return span, {kind: {"per_s": hits / span if span > 0 else 0.0, "share": hits / n}
                      for kind, hits in counts.items()}

    def _controller_snapshot(self) -> dict[str, Any] | None:
        """Summed over controllers: their own tick/hold/miss counts, totals and over the last RECENT_S."""
        reporting = [c for c in self.controllers.values() if c.history]
        if not reporting:
            return None
        latest = [c.history[-1] for c in reporting]
        baseline = [c.history[0] for c in reporting]
        span = max(last.time - base.time for last, base in zip(latest, baseline, strict=True))
        recent_misses = sum(last.deadline_misses - base.deadline_misses
                            for last, base in zip(latest, baseline, strict=True))
        with_ticks = [(last, base) for last, base in zip(latest, baseline, strict=True) if last.ticks is not None]
        ticks = sum(last.ticks or 0 for last, _ in with_ticks)
        held = sum(last.held or 0 for last, _ in with_ticks)
        recent_ticks = sum((last.ticks or 0) - (base.ticks or 0) for last, base in with_ticks)
        recent_held = sum((last.held or 0) - (base.held or 0) for last, base in with_ticks)
        return {
            "controllers": len(reporting),
            "deadline_misses": sum(last.deadline_misses for last in latest),
            "recent_deadline_misses": recent_misses,
            "deadline_miss_rate": recent_misses / span if span > 0 else 0.0,
            "recent_span_s": span,
            "ticks": ticks if with_ticks else None, "held": held if with_ticks else None,
            "hold_share": held / ticks if ticks else None,
            "recent_ticks": recent_ticks, "recent_held": recent_held,
            "recent_hold_share": recent_held / recent_ticks if recent_ticks else None,
        }

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            n = max(len(self.window), 1)
            share = {source: self.window.count(source) / n for source in SOURCES}
            hist = [0] * (len(LATENCY_EDGES_US) - 1)
            for micros in self.latency.get("total", ()):
                for i in range(len(hist)):
                    if micros < LATENCY_EDGES_US[i + 1] or i == len(hist) - 1:
                        hist[i] += 1
                        break
            stages = {}
            for stage in sorted(self.latency, key=lambda s: LATENCY_STAGES.index(s) if s in LATENCY_STAGES else 99):
                ordered = sorted(v for v in self.latency[stage] if math.isfinite(v))
                if ordered:
                    stages[stage] = {"p50": _percentile(ordered, 50), "p99": _percentile(ordered, 99),
                                     "n": len(ordered)}
            span, recent = self._recent()
            last = self.last
            return {
                "version": self.version,
                "records": self.records,
                "window": len(self.window),
                "share": share,
                "by_source": dict(self.by_source),
                "limit_hits": dict(self.limit_hits),
                "limit_rates": recent,
                "recent_s": RECENT_S,
                "recent_span_s": span,
                "controller": self._controller_snapshot(),
                "support_series": list(self.support),
                "latency_edges_us": LATENCY_EDGES_US,
                "latency_hist": hist,
                "latency_stages": stages,
                "events": [{"time": e["time"], "last_time": e["last_time"], "sequence": e["sequence"],
                            "last_sequence": e["last_sequence"], "count": e["count"], "kind": e["kind"],
                            "text": self._event_line(e)} for e in self.events],
                "last": None if last is None else {
                    "sequence": last.sequence, "time": last.time, "source": last.source,
                    "gate_advantage": _finite(last.gate_advantage), "support_score": _finite(last.support_score),
                    "support_threshold": _finite(last.support_threshold),
                    "action": [_finite(v) for v in last.action],
                    "action_low": [_finite(v) for v in last.action_low],
                    "action_high": [_finite(v) for v in last.action_high],
                    "action_soft_low": [_finite(v) for v in last.action_soft_low],
                    "action_soft_high": [_finite(v) for v in last.action_soft_high],
                    "limits": last.limits, "watchdog": last.watchdog,
                    "latency_us": {k: _finite(v) for k, v in last.latency_us.items()}, "client": last.client,
                    "observation_ood": last.observation_ood, "controller": last.controller,
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
