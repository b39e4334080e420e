"""The onboard action server: ZeroMQ ROUTER in front of one ONNX bundle, several controllers at once.

Per request the path is: decode -> infer (one fused onnxruntime call) -> decide (gate + support
monitor, `decision.py`) -> `_finalize` (the safety layer's hook) -> encode + send -> `telemetry`
(the telemetry hook, after the reply so it never adds latency). A malformed frame gets an error reply
and the loop goes on; only loopback TCP or ipc:// endpoints are bound.
"""
from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Self
from urllib.parse import urlsplit

import numpy as np
import zmq

from spaars_robot.errors import SpaarsError
from spaars_robot.export.bundle import Bundle
from spaars_robot.runtime import protocol as p
from spaars_robot.runtime.decision import Decision, DecisionState
from spaars_robot.runtime.inference import PolicyRunner

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
MAX_SESSIONS = 64  # a reconnecting client gets a new identity; old sessions are evicted oldest-first


class EndpointError(SpaarsError):
    """An endpoint this server refuses to bind (not loopback, or not tcp/ipc)."""


@dataclass
class TelemetryRecord:
    """One served request, handed to the telemetry hook after the reply has been sent."""

    session: int
    client: str
    seq: int
    server_seq: int
    t_wall: float  # time.time() when the request frame was received
    obs: np.ndarray
    action: np.ndarray  # as sent, after `_finalize`
    decision: Decision
    infer_us: float
    server_us: float


TelemetryHook = Callable[[TelemetryRecord], None]


@dataclass
class Session:
    """One handshaken controller: its identity, its decision latches, and its last action for `hold`."""

    id: int
    client: str
    state: DecisionState
    last_action: np.ndarray
    requests: int = 0
    sources: dict[str, int] = field(default_factory=lambda: dict.fromkeys(p.SOURCES, 0))


def check_endpoint(endpoint: str) -> str:
    """Accept ipc:// and tcp:// on 127.0.0.1 / ::1 / localhost only; never a wildcard."""
    if endpoint.startswith("ipc://"):
        return endpoint
    parts = urlsplit(endpoint)
    if parts.scheme != "tcp":
        raise EndpointError(f"endpoint {endpoint!r}: only tcp://127.0.0.1:PORT, tcp://[::1]:PORT or ipc:// are served")
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise EndpointError(f"endpoint {endpoint!r}: refusing to bind {host or 'all interfaces'}; "
                            "the action server binds loopback or ipc:// only")
    return endpoint


class ActionServer:
    """Serve `bundle` on `endpoints`; use as `with ActionServer(...) as s: s.serve(stop_event)`."""

    def __init__(self, bundle: Bundle, endpoints: Sequence[str] = (DEFAULT_ENDPOINT,),
                 telemetry: TelemetryHook | None = None, context: zmq.Context | None = None) -> None:
        self.endpoints = [check_endpoint(e) for e in endpoints]
        self.bundle = bundle
        m = bundle.manifest
        self.schema = p.Schema(task=m.task, obs_names=tuple(m.observation.names), action_names=tuple(m.action.names),
                               control_rate_hz=m.control_rate_hz)
        self.runner = PolicyRunner(bundle)
        self.telemetry: TelemetryHook = telemetry or (lambda record: None)
        self.sessions: OrderedDict[bytes, Session] = OrderedDict()
        self.server_seq = 0
        self.errors = 0
        self._next_session = 1
        self._welcome_fields = {"gate_threshold": m.gate.threshold, "gate_hysteresis": m.gate.hysteresis,
                                    "support_threshold": m.support.threshold, "support_hysteresis": m.support.hysteresis}
        self._ctx = context or zmq.Context.instance()
        self.socket = self._ctx.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.bound: list[str] = []  # actual endpoints, with `*` ports resolved
        for endpoint in self.endpoints:
            try:
                self.socket.bind(endpoint)
            except zmq.ZMQError as exc:
                self.socket.close()
                raise EndpointError(f"cannot bind {endpoint}: {exc}") from None
            self.bound.append(self.socket.getsockopt_string(zmq.LAST_ENDPOINT))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.socket.close(linger=0)

    def serve(self, stop: threading.Event | None = None, poll_ms: int = 100) -> None:
        """Answer requests until `stop` is set (checked at least every `poll_ms`)."""
        stop = stop or threading.Event()
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not stop.is_set():
            if poller.poll(poll_ms):
                self.serve_one()

    def serve_one(self) -> None:
        """Receive one message, reply, then emit telemetry; never raises on a bad frame."""
        frames = self.socket.recv_multipart()
        t_recv = time.perf_counter()
        if len(frames) < 2:
            return  # no identity frame: cannot reply to anyone
        envelope, payload = frames[:-1], frames[-1]
        reply, record = self.handle(envelope[0], payload, t_recv)
        self.socket.send_multipart([*envelope, reply], copy=False)
        if record is not None:
            self.telemetry(record)

    def handle(self, identity: bytes, payload: bytes, t_recv: float) -> tuple[bytes, TelemetryRecord | None]:
        """One request frame -> (reply frame, telemetry record or None)."""
        seq = None
        try:
            msg = p.decode(payload)
            seq = getattr(msg, "seq", None)
            if isinstance(msg, p.Act):
                return self._act(identity, msg, t_recv)
            if isinstance(msg, p.Hello):
                return p.encode(self._hello(identity, msg)), None
            if isinstance(msg, p.Reset):
                self._session(identity).state.reset()
                return p.encode(p.ResetOk(msg.seq)), None
            raise p.ProtocolError(p.MALFORMED, f"a client may not send {type(msg).__name__} messages")
        except p.ProtocolError as exc:
            self.errors += 1
            return p.encode(p.ErrorReply(exc.code, str(exc), seq)), None
        except Exception as exc:  # noqa: BLE001 - a bug in one request must not take the robot's server down
            self.errors += 1
            return p.encode(p.ErrorReply(p.INTERNAL, f"{type(exc).__name__}: {exc}", seq)), None

    def _hello(self, identity: bytes, hello: p.Hello) -> p.Welcome:
        if hello.version[0] != p.PROTOCOL_MAJOR:
            raise p.ProtocolError(p.VERSION_MISMATCH, f"client speaks protocol {hello.version[0]}.{hello.version[1]}, "
                                                      f"server {p.PROTOCOL_MAJOR}.{p.PROTOCOL_MINOR}")
        if hello.bundle_sha256 is not None and hello.bundle_sha256 != self.bundle.sha256:
            raise p.ProtocolError(p.BUNDLE_MISMATCH, f"client pinned bundle {hello.bundle_sha256[:12]}..., server "
                                                     f"serves {self.bundle.sha256[:12]}...")
        problem = self.schema.mismatch(hello.schema)
        if problem is not None:
            raise p.ProtocolError(problem[0], f"refused: {problem[1]} (bundle {self.bundle.path.name})")
        m = self.bundle.manifest
        session = Session(id=self._next_session, client=hello.client,
                          state=DecisionState(m.gate.threshold, m.gate.hysteresis, m.support.threshold,
                                              m.support.hysteresis),
                          last_action=np.zeros(m.action.dim, dtype=np.float32))
        self._next_session += 1
        self.sessions.pop(identity, None)
        self.sessions[identity] = session
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        return p.Welcome(schema=self.schema, bundle_sha256=self.bundle.sha256, session=session.id,
                         **self._welcome_fields)

    def _session(self, identity: bytes) -> Session:
        session = self.sessions.get(identity)
        if session is None:
            raise p.ProtocolError(p.UNKNOWN_CLIENT, "no handshake on this connection; send hello first")
        return session

    def _act(self, identity: bytes, act: p.Act, t_recv: float) -> tuple[bytes, TelemetryRecord]:
        session = self._session(identity)
        obs = act.obs
        if obs.shape != (self.schema.obs_dim,):
            raise p.ProtocolError(p.BAD_OBSERVATION, f"obs shape {list(obs.shape)}, expected [{self.schema.obs_dim}]")
        t_infer = time.perf_counter()
        if np.isfinite(obs).all():
            raw, latent, advantage, score = self.runner(obs)
            infer_us = (time.perf_counter() - t_infer) * 1e6
            decision = session.state.decide(advantage, score)
            action = raw if decision.source == "raw" else latent
        else:  # a broken sensor reading: repeat the last action rather than feed NaN to the networks
            infer_us = 0.0
            decision = Decision("hold", float("nan"), float("nan"), session.state.gate.on, session.state.support.on)
            action = session.last_action
        action = self._finalize(obs, action, decision)
        session.last_action = action
        session.requests += 1
        session.sources[decision.source] += 1
        self.server_seq += 1
        server_us = (time.perf_counter() - t_recv) * 1e6
        reply = p.encode(p.ActionReply(seq=act.seq, action=action, source=decision.source,
                                       gate_advantage=decision.gate_advantage, support_score=decision.support_score,
                                       fallbacks=session.state.fallbacks, infer_us=infer_us, server_us=server_us))
        record = TelemetryRecord(session=session.id, client=session.client, seq=act.seq, server_seq=self.server_seq,
                                 t_wall=time.time(), obs=obs, action=action, decision=decision, infer_us=infer_us,
                                 server_us=server_us)
        return reply, record

    def _finalize(self, obs: np.ndarray, action: np.ndarray, decision: Decision) -> np.ndarray:
        """The safety layer's single entry point: every action sent passes here. Currently a pass-through."""
        return action

    def stats(self) -> dict[str, object]:
        totals = dict.fromkeys(p.SOURCES, 0)
        for session in self.sessions.values():
            for source, count in session.sources.items():
                totals[source] += count
        return {"requests": self.server_seq, "errors": self.errors, "sessions": len(self.sessions), **totals,
                "fallbacks": sum(s.state.fallbacks for s in self.sessions.values())}
