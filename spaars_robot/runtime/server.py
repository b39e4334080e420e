"""The onboard action server: ZeroMQ ROUTER in front of one ONNX bundle, several controllers at once.

Per request the path is: decode -> infer (one fused onnxruntime call) -> decide (gate + support
monitor, `decision.py`) -> `_finalize` (the safety layer, `safety/limits.py`) -> encode + send ->
`telemetry` (after the reply, so it never adds latency to it). A malformed frame gets an error reply
and the loop goes on; only loopback TCP or ipc:// endpoints are bound, optionally behind CurveZMQ
authentication with an allow-list of client keys.
"""
from __future__ import annotations

import gc
import ipaddress
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

import numpy as np
import zmq

from spaars_robot.errors import SpaarsError, UnsafeActionError
from spaars_robot.export.bundle import Bundle
from spaars_robot.runtime import protocol as p
from spaars_robot.runtime.decision import Decision, DecisionState
from spaars_robot.runtime.inference import PolicyRunner
from spaars_robot.safety.limits import LIMIT_KINDS, ClientSafetyState, SafetyLayer, SafetyResult
from spaars_robot.telemetry.record import TelemetryRecord

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
MAX_SESSIONS = 64
# At the cap a new hello may take the place of the least recently active session only when that one has been
# silent this long (a reconnecting controller gets a new identity and leaves its old session behind); a live
# controller is never evicted by another local client: the newcomer is refused with `session_limit` instead.
SESSION_IDLE_EVICT_S = 10.0
MAX_REMEMBERED_CLIENTS = 1024

TelemetryHook = Callable[[TelemetryRecord], None]
WatchdogHook = Callable[[str, int], None]  # (state entered, new deadline misses) reported by a client


def pin_to_cpu(cpus: Sequence[int]) -> None:
    """Restrict the calling thread to `cpus` (Linux), so the scheduler never moves it off its warm core.

    Call it after the server's sockets exist: threads inherit the affinity of the thread that starts
    them, and ZeroMQ's I/O thread (which moves the bytes) must not share the core with a busy-polling
    serving thread, or each message waits for a scheduler time slice (measured: p99 ~4 ms).
    """
    available = os.sched_getaffinity(0)
    bad = [c for c in cpus if c not in available]
    if not cpus or bad:
        raise SpaarsError(f"cannot pin to CPU(s) {list(cpus)}: this process may run on {sorted(available)}")
    os.sched_setaffinity(0, set(cpus))


class StopFlag:
    """A stop request that a signal handler can raise.

    `threading.Event.set` takes a lock; a second signal that arrives while the first handler holds it runs its
    handler on the same thread, which then waits on that lock forever (found: `serve` hung for good on a SIGINT
    followed by a SIGTERM, as `timeout` or a supervisor that forwards signals sends them). Setting a bool takes no lock.
    """

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class EndpointError(SpaarsError):
    """An endpoint this server refuses to bind (not loopback, or not tcp/ipc)."""


@dataclass
class Session:
    """One handshaken controller: decision latches, safety history, last action for `hold`, counters.

    Created at each handshake, so a reconnecting controller starts with a fresh rate-limit history
    (the robot may have moved while the link was down) and fresh gate/support latches.
    """

    id: int
    client: str
    state: DecisionState
    safety: ClientSafetyState | None
    last_action: np.ndarray
    requests: int = 0
    sources: dict[str, int] = field(default_factory=lambda: dict.fromkeys(p.SOURCES, 0))
    limits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LIMIT_KINDS, 0))
    watchdog: str = "running"
    deadline_misses: int = 0
    controller: dict[str, int] = field(default_factory=dict)  # its latest reported counters, for telemetry
    last_seen: float = field(default_factory=time.monotonic)


def _outcome_fields(outcome: p.Outcome | None) -> dict[str, object]:
    """The controller's report of the transition into this observation, as telemetry record fields."""
    if outcome is None:
        return {}
    return {"episode_step": outcome.step, "reward": outcome.reward, "terminated": outcome.terminated,
            "truncated": outcome.truncated,
            "applied_action": [] if outcome.applied is None else outcome.applied.tolist()}


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
    """Serve `bundle` on `endpoints`; use as `with ActionServer(...) as s: s.serve(stop_event)`.

    `safety`: the layer every action passes through (None only for tests and benchmarks of the bare
    path). `telemetry`: called once per served request with its record, after the reply. `curve_keys`:
    a directory from `spaars-robot keys` (server.key_secret + allowed_clients/) to require CurveZMQ.
    """

    def __init__(self, bundle: Bundle, endpoints: Sequence[str] = (DEFAULT_ENDPOINT,),
                 telemetry: TelemetryHook | None = None, context: zmq.Context | None = None, *,
                 safety: SafetyLayer | None = None, on_watchdog: WatchdogHook | None = None,
                 curve_keys: Path | str | None = None) -> None:
        self.endpoints = [check_endpoint(e) for e in endpoints]
        self.bundle = bundle
        m = bundle.manifest
        self.schema = p.Schema(task=m.task, obs_names=tuple(m.observation.names), action_names=tuple(m.action.names),
                               control_rate_hz=m.control_rate_hz)
        if safety is not None:
            safety.spec.check_action_space(m.action.dim)
            safety.spec.check_observation_space(m.observation.dim)
        self.safety = safety
        self.runner = PolicyRunner(bundle)
        self.telemetry = telemetry
        self.on_watchdog = on_watchdog
        self.sessions: OrderedDict[bytes, Session] = OrderedDict()
        self.server_seq = 0
        self.errors = 0
        self.limit_counts = dict.fromkeys(LIMIT_KINDS, 0)
        # over the server's life, so the exit summary counts every request, not only live sessions' ones
        self.source_counts = dict.fromkeys(p.SOURCES, 0)
        self.fallback_count = 0
        self._next_session = 1
        # A controller's deadline-miss count is cumulative over its life, across reconnects; remembered per client
        # name so a new session does not count the old misses again (bounded: names are free-form).
        self._misses_by_client: OrderedDict[str, int] = OrderedDict()
        self._welcome_fields = {"gate_threshold": m.gate.threshold, "gate_hysteresis": m.gate.hysteresis,
                                "support_threshold": m.support.threshold, "support_hysteresis": m.support.hysteresis,
                                "controller": m.gate.controller}
        if safety is not None:
            self._action_low, self._action_high = (b.tolist() for b in safety.spec.action.hard_bounds())
            soft = safety.spec.action.vector("soft_zone")  # the dashboard draws the soft zone on the action bars
            self._action_soft_low = [lo + w for lo, w in zip(self._action_low, soft, strict=True)]
            self._action_soft_high = [hi - w for hi, w in zip(self._action_high, soft, strict=True)]
        else:
            self._action_low = [-np.inf if v is None else v for v in m.action.low]
            self._action_high = [np.inf if v is None else v for v in m.action.high]
            self._action_soft_low, self._action_soft_high = [], []
        self._ctx = context or zmq.Context.instance()
        self._authenticator = None
        self.socket = self._ctx.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.IPV6, 1)  # tcp://[::1]:PORT (documented) binds only with IPv6 enabled
        # a client's rebuilt socket reconnects under the same routing id (Client._routing_id): the new connection
        # takes over from the old one, which the server may not have seen close yet (else it is silently dropped)
        self.socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
        try:
            if curve_keys is not None:
                self._setup_curve(Path(curve_keys))
            self.bound: list[str] = []  # actual endpoints, with `*` ports resolved
            for endpoint in self.endpoints:
                try:
                    self.socket.bind(endpoint)
                except zmq.ZMQError as exc:
                    raise EndpointError(f"cannot bind {endpoint}: {exc}") from None
                self.bound.append(self.socket.getsockopt_string(zmq.LAST_ENDPOINT))
        except BaseException:
            self.close()
            raise

    def _setup_curve(self, keys: Path) -> None:
        """ZAP allow-list first, then the CURVE server role: both must be set before bind."""
        from spaars_robot.security.keys import (
            ALLOW_LIST_DIR,
            configure_curve_server,
            start_allow_list_authenticator,
        )

        self._authenticator = start_allow_list_authenticator(self._ctx, keys / ALLOW_LIST_DIR)
        configure_curve_server(self.socket, keys / "server.key_secret")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.socket.close(linger=0)
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None

    def serve(self, stop: threading.Event | StopFlag | None = None, poll_ms: int = 100, *,
              busy_poll: bool = False) -> None:
        """Answer requests until `stop` is set (checked at least every `poll_ms`).

        A request already queued is taken with a non-blocking receive; the poller (one more system
        call and Python round) is only used to sleep when there is nothing to do. `busy_poll` never
        sleeps: it spins on the non-blocking receive, so the core never idles and the request does not
        pay the wake-up of a sleeping process (on the 2-core VM of BENCHMARKS.md that wake-up and the
        cold caches after it cost ~200 us of a ~550 us round trip). It burns the whole core it runs on:
        use it with `pin_to_cpu` on a core the controller does not need. Objects alive at start (bundle,
        sessions, onnxruntime, numpy) are moved out of the garbage collector's view with `gc.freeze`, so
        a collection during serving scans only what the requests allocate.
        """
        stop = stop or threading.Event()
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        recv = self.socket.recv_multipart
        spins_per_stop_check = 1000 if busy_poll else 1  # Event.is_set takes a lock: not on every spin
        gc.collect()
        gc.freeze()
        try:
            idle = 0
            while True:
                try:
                    frames = recv(zmq.NOBLOCK)
                except zmq.Again:
                    idle += 1
                    if idle >= spins_per_stop_check:
                        idle = 0
                        if stop.is_set():
                            return
                        if not busy_poll:
                            poller.poll(poll_ms)
                    continue
                self._serve_frames(frames)
                if stop.is_set():
                    return
        finally:
            gc.unfreeze()

    def serve_one(self) -> None:
        """Receive one message (blocking), reply, then emit telemetry; never raises on a bad frame."""
        self._serve_frames(self.socket.recv_multipart())

    def _serve_frames(self, frames: list[bytes]) -> None:
        """[identity, payload] (DEALER) or [identity, b"", payload] (REQ): one frame in, one frame out.

        Any other shape is answered `malformed` to the identity alone: echoing unknown leading frames would
        hand a client's bytes back unchecked (a 65 KiB leading frame passed the frame-size cap that way).
        """
        t_recv = time.perf_counter()
        if len(frames) < 2:
            return  # no identity frame: cannot reply to anyone
        identity = frames[0]
        if len(frames) == 2:
            envelope, payload = [identity], frames[1]
        elif len(frames) == 3 and not frames[1]:
            envelope, payload = [identity, b""], frames[2]
        else:
            self.errors += 1
            error = p.ErrorReply(p.MALFORMED, f"a request is one frame (after an optional empty delimiter); got "
                                              f"{len(frames) - 1} frames")
            self.socket.send_multipart([identity, p.encode(error)], copy=False)
            return
        reply, record = self.handle(identity, payload, t_recv)
        self.socket.send_multipart([*envelope, reply], copy=False)
        if record is not None and self.telemetry is not None:
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
            return p.encode(p.ErrorReply(exc.code, str(exc), seq if seq is not None else exc.seq)), None
        except UnsafeActionError as exc:
            self.errors += 1
            return p.encode(p.ErrorReply(p.UNSAFE_ACTION, str(exc), seq)), None
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
        self._make_room_for(identity)
        m = self.bundle.manifest
        session = Session(id=self._next_session, client=hello.client[:64],
                          state=DecisionState.for_bundle(m),
                          safety=None if self.safety is None else self.safety.new_state(),
                          last_action=np.zeros(m.action.dim, dtype=np.float32),
                          deadline_misses=self._misses_by_client.get(hello.client[:64], 0))
        self._next_session += 1
        self.sessions.pop(identity, None)
        self.sessions[identity] = session
        return p.Welcome(schema=self.schema, bundle_sha256=self.bundle.sha256, session=session.id,
                         seq=hello.seq, **self._welcome_fields)

    def _make_room_for(self, identity: bytes) -> None:
        """At MAX_SESSIONS, evict the least recently active session if it is idle, else refuse the newcomer."""
        if identity in self.sessions or len(self.sessions) < MAX_SESSIONS:
            return
        stalest_identity, stalest = min(self.sessions.items(), key=lambda item: item[1].last_seen)
        idle_s = time.monotonic() - stalest.last_seen
        if idle_s < SESSION_IDLE_EVICT_S:
            raise p.ProtocolError(p.SESSION_LIMIT, f"{MAX_SESSIONS} sessions are active (the quietest was seen "
                                                   f"{idle_s:.1f} s ago); retry after one has been idle "
                                                   f"{SESSION_IDLE_EVICT_S:g} s")
        del self.sessions[stalest_identity]

    def _session(self, identity: bytes) -> Session:
        session = self.sessions.get(identity)
        if session is None:
            raise p.ProtocolError(p.UNKNOWN_CLIENT, "no handshake on this connection; send hello first")
        session.last_seen = time.monotonic()
        return session

    def _act(self, identity: bytes, act: p.Act, t_recv: float) -> tuple[bytes, TelemetryRecord | None]:
        session = self._session(identity)
        obs = act.obs
        if obs.shape != (self.schema.obs_dim,):
            raise p.ProtocolError(p.BAD_OBSERVATION, f"obs shape {list(obs.shape)}, expected [{self.schema.obs_dim}]")
        if act.watchdog is not None:
            self._watchdog_report(session, act.watchdog)
        applied = None if act.outcome is None else act.outcome.applied
        if applied is not None and applied.shape != (self.schema.action_dim,):
            raise p.ProtocolError(p.MALFORMED, f"outcome.applied shape {list(applied.shape)}, "
                                               f"expected [{self.schema.action_dim}]")
        t_infer = time.perf_counter()
        if np.isfinite(obs).all():
            raw, latent, advantage, score = self.runner(obs, session.state.skill)
            t_decide = time.perf_counter()
            decision = session.state.decide(advantage, score)
            action = raw if decision.source == "raw" else latent
        else:  # a broken sensor reading: repeat the last action rather than feed NaN to the networks
            t_decide = t_infer
            decision = Decision("hold", float("nan"), float("nan"), session.state.gate.on, session.state.support.on)
            action = session.last_action
        policy_action = action
        t_safety = time.perf_counter()
        result = self._finalize(session, obs, action, decision)
        t_done = time.perf_counter()
        if result.held and decision.source != "hold":  # the safety spec answered with the previous action
            decision = Decision("hold", decision.gate_advantage, decision.support_score, decision.gate_raw,
                                decision.out_of_support)
        action = result.action
        session.last_action = action
        session.requests += 1
        session.sources[decision.source] += 1
        self.source_counts[decision.source] += 1
        if decision.source == "fallback":
            self.fallback_count += 1
        for kind in result.limits:
            session.limits[kind] += 1
            self.limit_counts[kind] += 1
        self.server_seq += 1
        infer_us, safety_us = (t_decide - t_infer) * 1e6, (t_done - t_safety) * 1e6
        reply = p.encode(p.ActionReply(seq=act.seq, action=action, source=decision.source,
                                       gate_advantage=decision.gate_advantage, support_score=decision.support_score,
                                       fallbacks=session.state.fallbacks, infer_us=infer_us,
                                       server_us=(time.perf_counter() - t_recv) * 1e6, limits=result.limits,
                                       observation_ood=result.observation_ood, safety_us=safety_us))
        if self.telemetry is None:
            return reply, None  # no one listens: do not even build the record
        t_sent = time.perf_counter()
        record = TelemetryRecord(
            time=time.time(), sequence=act.seq, source=decision.source, gate_advantage=decision.gate_advantage,
            support_score=decision.support_score, support_threshold=self._welcome_fields["support_threshold"],
            action=[float(v) for v in action], action_low=self._action_low, action_high=self._action_high,
            action_soft_low=self._action_soft_low, action_soft_high=self._action_soft_high,
            controller=session.controller,
            limits=list(result.limits),
            latency_us={"decode": (t_infer - t_recv) * 1e6, "policy": infer_us,
                        "decide": (t_safety - t_decide) * 1e6, "safety": safety_us,
                        "encode": (t_sent - t_done) * 1e6, "total": (t_sent - t_recv) * 1e6},
            watchdog=session.watchdog, client=f"{session.client}#{session.id}",
            observation_ood=result.observation_ood, observation=obs.tolist(),
            policy_action=[float(v) for v in policy_action], **_outcome_fields(act.outcome))
        return reply, record

    def _finalize(self, session: Session, obs: np.ndarray, action: np.ndarray, decision: Decision) -> SafetyResult:
        """The safety layer's single entry point: every action sent, hold included, passes here.

        Raises UnsafeActionError (-> `unsafe_action` error reply) only under the spec's `nonfinite: reject`.
        """
        if self.safety is None or session.safety is None:
            return SafetyResult(action, (), False, held=decision.source == "hold")
        if decision.source == "hold":
            return self.safety.hold(session.safety)
        return self.safety.apply(action, session.safety, obs)

    def _watchdog_report(self, session: Session, report: p.WatchdogReport) -> None:
        """Track the controller's reported watchdog state; count its transitions and new deadline misses."""
        new_misses = max(report.deadline_misses - session.deadline_misses, 0)
        changed = report.state != session.watchdog
        session.watchdog, session.deadline_misses = report.state, report.deadline_misses
        self._misses_by_client[session.client] = report.deadline_misses
        self._misses_by_client.move_to_end(session.client)
        while len(self._misses_by_client) > MAX_REMEMBERED_CLIENTS:
            self._misses_by_client.popitem(last=False)
        session.controller = {"deadline_misses": report.deadline_misses}
        if report.ticks is not None and report.held is not None:
            session.controller.update(ticks=report.ticks, held=report.held)
        if (changed or new_misses) and self.on_watchdog is not None:
            self.on_watchdog(report.state if changed else "", new_misses)

    def stats(self) -> dict[str, object]:
        """Totals over the server's life (requests by source, fallbacks, errors, limits) and live sessions.

        Over its life, not over live sessions: a controller that reconnected or was evicted still served its
        requests (summing live sessions once reported 285 of 40,672 requests).
        """
        return {"requests": self.server_seq, "errors": self.errors, "sessions": len(self.sessions),
                **self.source_counts, "fallbacks": self.fallback_count, "limits": dict(self.limit_counts)}
