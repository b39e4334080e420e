"""The wire protocol, the one module both the server and every client encode and decode with.

Every ZeroMQ message is ONE frame holding ONE msgpack map (the ROUTER adds the peer identity frame
itself; clients never see it). No pickle anywhere: arrays travel as `{"dtype": "<f4", "shape": [n],
"data": <little-endian bytes>}` and only that dtype is accepted. Every map carries `v` (protocol major
version) and `type`. The full description, with examples, is in docs/protocol.md; change both together.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import msgpack
import numpy as np

from spaars_robot.errors import SpaarsError
from spaars_robot.export.manifest import Controller

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 4  # 1.1: optional `watchdog` report in act; `limits` / `ood` / `safety_us` in action
# 1.2: optional `outcome` in act (the controller's reward / termination, for recording deployed episodes)
# 1.3: optional `seq` in hello, echoed by welcome: a client that reconnects under its routing id can tell the
#      welcome to its latest hello from one to a hello sent on the socket it threw away
# 1.4: `gate.controller` in welcome: gated, raw or latent (the bundle's manifest); absent from a 1.3 server: gated
CONTROLLERS: tuple[str, ...] = get_args(Controller)
MAX_FRAME_BYTES = 64 * 1024  # a Hopper request is ~100 bytes; anything this big is not ours
WIRE_DTYPE = "<f4"

Source = Literal["raw", "latent", "fallback", "hold"]
SOURCES: tuple[Source, ...] = ("raw", "latent", "fallback", "hold")
# The client watchdog's states (safety/watchdog.py), as a controller may report them in `act`.
WATCHDOG_STATES = frozenset({"wait_handshake", "running", "hold", "damp", "safe_stop"})

# Error codes a server may answer with (docs/protocol.md, "Errors").
MALFORMED = "malformed"
VERSION_MISMATCH = "version_mismatch"
SCHEMA_MISMATCH = "schema_mismatch"
BUNDLE_MISMATCH = "bundle_mismatch"
RATE_MISMATCH = "rate_mismatch"
UNKNOWN_CLIENT = "unknown_client"
BAD_OBSERVATION = "bad_observation"
UNSAFE_ACTION = "unsafe_action"
SESSION_LIMIT = "session_limit"
INTERNAL = "internal"
REFUSALS = frozenset({VERSION_MISMATCH, SCHEMA_MISMATCH, BUNDLE_MISMATCH, RATE_MISMATCH})


class ProtocolError(SpaarsError):
    """A frame that is not a valid message of this protocol; `code` is the wire error code to answer with."""

    def __init__(self, code: str, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.seq = seq  # the request's seq when it could be read, so the error reply can name the request


class HandshakeRefused(ProtocolError):
    """The server refused our hello (version, schema, bundle or rate mismatch); retrying will not help."""


class ServerError(ProtocolError):
    """The server answered a request with an error message."""


@dataclass(frozen=True)
class Schema:
    """What both ends must agree on before the first observation: names, dims, dtype, rate."""

    task: str
    obs_names: tuple[str, ...]
    action_names: tuple[str, ...]
    control_rate_hz: float
    dtype: str = "float32"

    @property
    def obs_dim(self) -> int:
        return len(self.obs_names)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    def to_wire(self) -> dict[str, Any]:
        return {"task": self.task, "obs_names": list(self.obs_names), "action_names": list(self.action_names),
                "obs_dim": self.obs_dim, "action_dim": self.action_dim, "dtype": self.dtype,
                "control_rate_hz": self.control_rate_hz}

    @classmethod
    def from_wire(cls, m: Any) -> Schema:
        """The schema as sent; its declared dims must be integers and agree with its names.

        A declared dim of the wrong type is `malformed`; one that disagrees with the names (12 dims, 11 names)
        is a different schema, `schema_mismatch`, never silently replaced by the count of names.
        """
        m = _map(m, "schema")
        rate = float(_get(m, "control_rate_hz", (int, float)))
        if not math.isfinite(rate) or rate <= 0:
            raise ProtocolError(MALFORMED, f"control_rate_hz {rate!r} must be a finite positive number")
        schema = cls(task=_get(m, "task", str), obs_names=tuple(_str_list(m, "obs_names")),
                     action_names=tuple(_str_list(m, "action_names")), control_rate_hz=rate,
                     dtype=_get(m, "dtype", str))
        for key, names in (("obs_dim", schema.obs_names), ("action_dim", schema.action_names)):
            declared = _get(m, key, int)
            if declared != len(names):
                raise ProtocolError(SCHEMA_MISMATCH, f"{key} {declared} but {len(names)} names")
        return schema

    def mismatch(self, other: Schema) -> tuple[str, str] | None:
        """(error code, reason) if `other` (the client's view) is incompatible with this (the server's)."""
        if other.dtype != self.dtype:
            return SCHEMA_MISMATCH, f"dtype {other.dtype} != {self.dtype}"
        if other.task != self.task:
            return SCHEMA_MISMATCH, f"task {other.task!r} != {self.task!r}"
        if (other.obs_dim, other.action_dim) != (self.obs_dim, self.action_dim):
            return SCHEMA_MISMATCH, (f"obs/action dims {other.obs_dim}/{other.action_dim} != "
                                     f"{self.obs_dim}/{self.action_dim}")
        if other.obs_names != self.obs_names or other.action_names != self.action_names:
            return SCHEMA_MISMATCH, "observation or action names differ"
        if abs(other.control_rate_hz - self.control_rate_hz) > 1e-9 * self.control_rate_hz:
            return RATE_MISMATCH, f"control rate {other.control_rate_hz} Hz != {self.control_rate_hz} Hz"
        return None


@dataclass(frozen=True)
class Hello:
    """client -> server, first message of a session."""

    schema: Schema
    client: str = "spaars-client"
    bundle_sha256: str | None = None  # pin a bundle; None accepts whatever the server serves
    version: tuple[int, int] = (PROTOCOL_MAJOR, PROTOCOL_MINOR)
    seq: int | None = None  # 1.3: echoed by the welcome


@dataclass(frozen=True)
class Welcome:
    """server -> client, accepts a Hello; everything the client needs to interpret replies."""

    schema: Schema
    bundle_sha256: str
    session: int
    gate_threshold: float
    gate_hysteresis: float
    support_threshold: float
    support_hysteresis: float
    version: tuple[int, int] = (PROTOCOL_MAJOR, PROTOCOL_MINOR)
    seq: int | None = None  # the hello's seq (1.3; None from a 1.2 server or to a hello without one)
    controller: Controller = "gated"  # 1.4: what the bundle deploys; the gate thresholds only decide when "gated"


@dataclass(frozen=True)
class WatchdogReport:
    """What a controller's watchdog says (optional in `act`), so server telemetry can show the robot side."""

    state: str
    deadline_misses: int
    # Optional: periods the controller has run and those it applied no fresh reply in (held, damped or
    # stopped), both cumulative. Only the controller knows them: a held period may send nothing that arrives.
    ticks: int | None = None
    held: int | None = None


@dataclass(frozen=True)
class Outcome:
    """What happened between the previous observation and this one (optional in `act`, since 1.2).

    Sent by a controller that knows its reward, so a recording of deployed episodes is training data
    (`spaars-robot data import x.mcap`). `step` is this observation's index in its episode (the first
    observation of an episode carries no outcome); `terminated`/`truncated` mean this observation ends
    the episode; `applied` is the action the controller really applied after the previous observation
    (its watchdog may have held instead of applying the reply).
    """

    step: int
    reward: float
    terminated: bool = False
    truncated: bool = False
    applied: np.ndarray | None = None


@dataclass(frozen=True)
class Act:
    """client -> server: one observation, tagged with a client sequence number echoed in the reply."""

    seq: int
    obs: np.ndarray
    watchdog: WatchdogReport | None = None
    outcome: Outcome | None = None


@dataclass(frozen=True)
class ActionReply:
    """server -> client: the action to apply and why it was chosen."""

    seq: int
    action: np.ndarray
    source: Source
    gate_advantage: float
    support_score: float
    fallbacks: int  # ticks this session answered with the fallback so far
    infer_us: float  # onnxruntime call
    server_us: float  # frame received -> reply encoded
    limits: tuple[str, ...] = ()  # safety limits that acted on this action, in order of application
    observation_ood: bool = False  # the observation was outside the safety spec's bounds
    safety_us: float = 0.0  # safety layer
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reset:
    """client -> server: a new episode starts; gate and support hysteresis state go back to initial."""

    seq: int


@dataclass(frozen=True)
class ResetOk:
    seq: int


@dataclass(frozen=True)
class ErrorReply:
    code: str
    message: str
    seq: int | None = None


Message = Hello | Welcome | Act | ActionReply | Reset | ResetOk | ErrorReply


def encode_array(array: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(array, dtype=WIRE_DTYPE)
    return {"dtype": WIRE_DTYPE, "shape": list(a.shape), "data": a.tobytes()}


def decode_array(m: Any, what: str) -> np.ndarray:
    m = _map(m, what)
    if m.get("dtype") != WIRE_DTYPE:
        raise ProtocolError(MALFORMED, f"{what}: dtype must be {WIRE_DTYPE!r}, got {m.get('dtype')!r}")
    shape = m.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape) or len(shape) > 4:
        raise ProtocolError(MALFORMED, f"{what}: shape must be a list of non-negative ints")
    data = m.get("data")
    if not isinstance(data, bytes) or len(data) != 4 * int(np.prod(shape, dtype=np.int64)):
        raise ProtocolError(MALFORMED, f"{what}: data must be {4 * int(np.prod(shape))} bytes for shape {shape}")
    return np.frombuffer(data, dtype=WIRE_DTYPE).reshape(shape)


def encode(msg: Message) -> bytes:
    """Message -> one msgpack frame."""
    v = PROTOCOL_MAJOR
    if isinstance(msg, Act):
        body = {"v": v, "type": "act", "seq": msg.seq, "obs": encode_array(msg.obs)}
        if msg.watchdog is not None:
            body["watchdog"] = {"state": msg.watchdog.state, "deadline_misses": msg.watchdog.deadline_misses}
            if msg.watchdog.ticks is not None and msg.watchdog.held is not None:
                body["watchdog"].update(ticks=msg.watchdog.ticks, held=msg.watchdog.held)
        if msg.outcome is not None:
            o = msg.outcome
            body["outcome"] = {"step": int(o.step), "reward": float(o.reward), "terminated": bool(o.terminated),
                               "truncated": bool(o.truncated), **({} if o.applied is None else
                                                            {"applied": encode_array(o.applied)})}
    elif isinstance(msg, ActionReply):
        body = {"v": v, "type": "action", "seq": msg.seq, "action": encode_array(msg.action), "source": msg.source,
                "gate_advantage": msg.gate_advantage, "support_score": msg.support_score,
                "fallbacks": msg.fallbacks, "limits": list(msg.limits), "ood": msg.observation_ood,
                "timing": {"infer_us": msg.infer_us, "safety_us": msg.safety_us, "server_us": msg.server_us},
                **({"extra": msg.extra} if msg.extra else {})}
    elif isinstance(msg, Hello):
        body = {"v": msg.version[0], "type": "hello", "version": list(msg.version), "client": msg.client,
                "schema": msg.schema.to_wire(), "bundle_sha256": msg.bundle_sha256,
                **({} if msg.seq is None else {"seq": msg.seq})}
    elif isinstance(msg, Welcome):
        body = {"v": msg.version[0], "type": "welcome", "version": list(msg.version), "schema": msg.schema.to_wire(),
                "bundle_sha256": msg.bundle_sha256, "session": msg.session,
                "gate": {"threshold": msg.gate_threshold, "hysteresis": msg.gate_hysteresis,
                         "controller": msg.controller},
                "support": {"threshold": msg.support_threshold, "hysteresis": msg.support_hysteresis},
                **({} if msg.seq is None else {"seq": msg.seq})}
    elif isinstance(msg, Reset):
        body = {"v": v, "type": "reset", "seq": msg.seq}
    elif isinstance(msg, ResetOk):
        body = {"v": v, "type": "reset_ok", "seq": msg.seq}
    elif isinstance(msg, ErrorReply):
        body = {"v": v, "type": "error", "code": msg.code, "message": msg.message, "seq": msg.seq}
    else:
        raise TypeError(f"not a protocol message: {type(msg).__name__}")
    return msgpack.packb(body, use_bin_type=True)


def decode(frame: bytes) -> Message:
    """One frame -> Message; raises ProtocolError (code MALFORMED or VERSION_MISMATCH) on anything else."""
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(MALFORMED, f"frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        m = msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise ProtocolError(MALFORMED, f"not a msgpack frame: {exc}") from None
    seq = readable_seq(m)
    try:
        return _decode_map(_map(m, "message"))
    except ProtocolError as exc:
        exc.seq = seq
        raise
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # a field of the right key but wrong shape
        raise ProtocolError(MALFORMED, f"malformed message: {type(exc).__name__}: {str(exc)[:80]}", seq) from None


def readable_seq(m: Any) -> int | None:
    """The `seq` of a decoded map when it is an integer, whatever else is wrong with the message."""
    seq = m.get("seq") if isinstance(m, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def _decode_map(m: dict) -> Message:
    kind = m.get("type")
    if not isinstance(m.get("v"), int) or isinstance(m.get("v"), bool):
        raise ProtocolError(MALFORMED, "field 'v' (protocol major version) missing or not an integer")
    if m.get("v") != PROTOCOL_MAJOR:
        raise ProtocolError(VERSION_MISMATCH, f"protocol major version {m.get('v')!r}; this end speaks "
                                              f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}")
    if kind == "act":
        report, outcome = m.get("watchdog"), m.get("outcome")
        return Act(seq=_get(m, "seq", int), obs=decode_array(m.get("obs"), "obs"),
                   watchdog=None if report is None else _watchdog_report(report),
                   outcome=None if outcome is None else _outcome(outcome))
    if kind == "action":
        timing = _map(m.get("timing"), "timing")
        source = _get(m, "source", str)
        if source not in SOURCES:
            raise ProtocolError(MALFORMED, f"unknown action source {source!r}")
        limits = m.get("limits", [])
        if not isinstance(limits, list) or not all(isinstance(k, str) for k in limits):
            raise ProtocolError(MALFORMED, "field 'limits' must be a list of strings")
        return ActionReply(seq=_get(m, "seq", int), action=decode_array(m.get("action"), "action"), source=source,
                           gate_advantage=float(_get(m, "gate_advantage", (int, float))),
                           support_score=float(_get(m, "support_score", (int, float))),
                           fallbacks=_get(m, "fallbacks", int), infer_us=float(timing.get("infer_us", 0.0)),
                           server_us=float(timing.get("server_us", 0.0)), limits=tuple(limits),
                           observation_ood=m.get("ood") is True, safety_us=float(timing.get("safety_us", 0.0)),
                           extra=m.get("extra") or {})
    if kind == "hello":
        version = _version(m)
        sha = m.get("bundle_sha256")
        if sha is not None and not isinstance(sha, str):
            raise ProtocolError(MALFORMED, "bundle_sha256 must be a string or nil")
        return Hello(schema=Schema.from_wire(m.get("schema")), client=str(m.get("client", "")), bundle_sha256=sha,
                     version=version, seq=_optional_seq(m))
    if kind == "welcome":
        gate, support = _map(m.get("gate"), "gate"), _map(m.get("support"), "support")
        return Welcome(schema=Schema.from_wire(m.get("schema")), bundle_sha256=_get(m, "bundle_sha256", str),
                       session=_get(m, "session", int), gate_threshold=float(gate["threshold"]),
                       gate_hysteresis=float(gate["hysteresis"]), support_threshold=float(support["threshold"]),
                       support_hysteresis=float(support["hysteresis"]), version=_version(m), seq=_optional_seq(m),
                       controller=_controller(gate))
    if kind == "reset":
        return Reset(seq=_get(m, "seq", int))
    if kind == "reset_ok":
        return ResetOk(seq=_get(m, "seq", int))
    if kind == "error":
        seq = m.get("seq")
        return ErrorReply(code=_get(m, "code", str), message=_get(m, "message", str),
                          seq=seq if isinstance(seq, int) else None)
    raise ProtocolError(MALFORMED, f"unknown message type {kind!r}")


def _outcome(m: Any) -> Outcome:
    m = _map(m, "outcome")
    step, reward = _get(m, "step", int), float(_get(m, "reward", (int, float)))
    if step < 1:
        raise ProtocolError(MALFORMED, "outcome step must be >= 1 (the first observation of an episode has none)")
    if not math.isfinite(reward):
        raise ProtocolError(MALFORMED, f"outcome reward {reward!r} must be finite")
    flags = [m.get(key, False) for key in ("terminated", "truncated")]
    if not all(isinstance(flag, bool) for flag in flags):
        raise ProtocolError(MALFORMED, "outcome terminated/truncated must be booleans")
    applied = m.get("applied")
    if applied is not None:
        applied = decode_array(applied, "outcome.applied")
        if applied.ndim != 1 or not np.isfinite(applied).all():
            raise ProtocolError(MALFORMED, "outcome.applied must be a finite vector")
    return Outcome(step=step, reward=reward, terminated=flags[0], truncated=flags[1], applied=applied)


def _watchdog_report(m: Any) -> WatchdogReport:
    m = _map(m, "watchdog")
    state = _get(m, "state", str)
    if state not in WATCHDOG_STATES:
        raise ProtocolError(MALFORMED, f"unknown watchdog state {state[:32]!r}")
    misses = _get(m, "deadline_misses", int)
    if misses < 0:
        raise ProtocolError(MALFORMED, "watchdog deadline_misses must be >= 0")
    if m.get("ticks") is None and m.get("held") is None:
        return WatchdogReport(state=state, deadline_misses=misses)
    ticks, held = _get(m, "ticks", int), _get(m, "held", int)
    if not 0 <= held <= ticks:
        raise ProtocolError(MALFORMED, "watchdog ticks and held must satisfy 0 <= held <= ticks")
    return WatchdogReport(state=state, deadline_misses=misses, ticks=ticks, held=held)


def _map(m: Any, what: str) -> dict:
    if not isinstance(m, dict):
        raise ProtocolError(MALFORMED, f"{what} must be a map, got {type(m).__name__}")
    return m


def _get(m: dict, key: str, kind: type | tuple[type, ...]) -> Any:
    value = m.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ProtocolError(MALFORMED, f"field {key!r} missing or of the wrong type")
    return value


def _str_list(m: dict, key: str) -> list[str]:
    value = m.get(key)
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ProtocolError(MALFORMED, f"field {key!r} must be a list of strings")
    return value


def _controller(gate: dict) -> Controller:
    """welcome.gate.controller (1.4); a 1.3 server's welcome has none and served the gate."""
    controller = gate.get("controller", "gated")
    if controller not in CONTROLLERS:
        raise ProtocolError(MALFORMED, f"gate.controller must be one of {', '.join(CONTROLLERS)}, not {controller!r}")
    return controller


def _optional_seq(m: dict) -> int | None:
    """A hello's or welcome's `seq` (1.3): absent or nil is None; anything but an integer is malformed."""
    seq = m.get("seq")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
        raise ProtocolError(MALFORMED, "field 'seq' must be an integer or nil")
    return seq


def _version(m: dict) -> tuple[int, int]:
    version = m.get("version")
    if not (isinstance(version, list) and len(version) == 2 and all(isinstance(x, int) for x in version)):
        raise ProtocolError(MALFORMED, "version must be [major, minor]")
    return version[0], version[1]
