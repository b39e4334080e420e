"""The per-request telemetry record and its msgpack wire form.

One record per served request, a flat-ish msgpack map with plain types only (no ext types, no
pickle), so PlotJuggler's ZMQ subscriber can plot every field with its msgpack parser and any
language can read it. Latencies are microseconds per stage; `time` is Unix seconds.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from spaars_robot.errors import SpaarsError

SOURCES = ("raw", "latent", "fallback", "hold")
MAX_RECORD_BYTES = 64 * 1024  # a record is ~300 bytes; anything this big is not ours
MAX_VECTOR = 1024


class TelemetryDecodeError(SpaarsError):
    """A telemetry message is not a valid record."""


@dataclass(slots=True)
class TelemetryRecord:
    """What happened on one request, from the server's point of view (plus the client's watchdog
    state when the client reports it)."""

    time: float
    sequence: int
    source: str  # raw | latent | fallback | hold
    gate_advantage: float
    support_score: float
    support_threshold: float
    action: list[float]
    action_low: list[float]  # hard bounds the action was limited to, for "action vs limits"
    action_high: list[float]
    # Soft-zone edges inside the hard bounds (safety spec `soft_zone`): beyond them the safety layer pushes
    # back; equal to the hard bound where a dim has no soft zone; empty when the server runs no safety spec.
    action_soft_low: list[float] = field(default_factory=list)
    action_soft_high: list[float] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)  # limit kinds that acted (safety.limits.LIMIT_KINDS)
    latency_us: dict[str, float] = field(default_factory=dict)  # stage -> microseconds; "total" overall
    watchdog: str = "running"
    # The controller's own cumulative counters from its latest report (protocol `act.watchdog`):
    # `deadline_misses`, and since protocol 1.2 `ticks` and `held` (periods it applied no fresh reply).
    # Empty when the controller reports nothing. The server's `source: hold` is a different thing.
    controller: dict[str, int] = field(default_factory=dict)
    client: str = ""
    observation_ood: bool = False
    # What training on deployed experience needs (`data import x.mcap`): the observation as received, the
    # action the decision rule chose before the safety layer (`action` is what was sent, after it), and
    # the controller's report of the transition into this observation when it sends one (protocol 1.2
    # `act.outcome`): its index in the episode, the reward, termination/truncation, and the action it really
    # applied after the previous observation (the watchdog may have held instead). None / [] when not sent.
    observation: list[float] = field(default_factory=list)
    policy_action: list[float] = field(default_factory=list)
    episode_step: int | None = None
    reward: float | None = None
    terminated: bool | None = None
    truncated: bool | None = None
    applied_action: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its recursive deep copy costs ~10 us per record on the serving path.
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def to_msgpack(self) -> bytes:
        return msgpack.packb(self.to_dict(), use_bin_type=True)

    @classmethod
    def from_msgpack(cls, payload: bytes) -> TelemetryRecord:
        """Decode and check one record; any defect is a TelemetryDecodeError, never another exception."""
        if len(payload) > MAX_RECORD_BYTES:
            raise TelemetryDecodeError(f"telemetry message of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
        try:
            raw = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_bin_len=0, max_ext_len=0)
        except Exception as exc:  # msgpack raises several unrelated types for malformed input
            raise TelemetryDecodeError(f"telemetry message is not msgpack ({type(exc).__name__})") from exc
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Any) -> TelemetryRecord:
        if not isinstance(raw, dict):
            raise TelemetryDecodeError("telemetry message is not a map")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise TelemetryDecodeError(f"unknown telemetry fields: {sorted(map(str, unknown))}")
        try:
            record = cls(
                time=_number(raw["time"], "time"),
                sequence=_integer(raw["sequence"], "sequence"),
                source=_source(raw["source"]),
                gate_advantage=_number(raw["gate_advantage"], "gate_advantage"),
                support_score=_number(raw["support_score"], "support_score"),
                support_threshold=_number(raw["support_threshold"], "support_threshold"),
                action=_vector(raw["action"], "action"),
                action_low=_vector(raw["action_low"], "action_low"),
                action_high=_vector(raw["action_high"], "action_high"),
                action_soft_low=_vector(raw.get("action_soft_low", []), "action_soft_low"),
                action_soft_high=_vector(raw.get("action_soft_high", []), "action_soft_high"),
                limits=_strings(raw.get("limits", []), "limits"),
                latency_us={k: _number(v, f"latency_us.{k}") for k, v in _map(raw.get("latency_us", {})).items()},
                watchdog=_string(raw.get("watchdog", "running"), "watchdog"),
                controller=_counters(raw.get("controller", {})),
                client=_string(raw.get("client", ""), "client"),
                observation_ood=_boolean(raw.get("observation_ood", False), "observation_ood"),
                observation=_vector(raw.get("observation", []), "observation"),
                policy_action=_vector(raw.get("policy_action", []), "policy_action"),
                episode_step=_optional(raw.get("episode_step"), _integer, "episode_step"),
                reward=_optional(raw.get("reward"), _number, "reward"),
                terminated=_optional(raw.get("terminated"), _boolean, "terminated"),
                truncated=_optional(raw.get("truncated"), _boolean, "truncated"),
                applied_action=_vector(raw.get("applied_action", []), "applied_action"),
            )
        except KeyError as exc:
            raise TelemetryDecodeError(f"telemetry record lacks field {exc.args[0]!r}") from exc
        if not len(record.action) == len(record.action_low) == len(record.action_high):
            raise TelemetryDecodeError("action, action_low and action_high differ in length")
        if len(record.action_soft_low) != len(record.action_soft_high) or \
                record.action_soft_low and len(record.action_soft_low) != len(record.action):
            raise TelemetryDecodeError("action_soft_low/high must be empty or as long as action")
        return record


def _number(value: Any, name: str) -> float:
    # NaN/inf are legitimate telemetry (a NaN policy output is exactly what we want to see).
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TelemetryDecodeError(f"telemetry field {name} must be a number")
    return float(value)


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TelemetryDecodeError(f"telemetry field {name} must be an integer")
    return value


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) > 256:
        raise TelemetryDecodeError(f"telemetry field {name} must be a short string")
    return value


def _boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TelemetryDecodeError(f"telemetry field {name} must be a boolean")
    return value


def _optional(value: Any, check: Callable[[Any, str], Any], name: str) -> Any:
    """Fields of the controller's optional report: absent or nil when it sent none."""
    return None if value is None else check(value, name)


def _source(value: Any) -> str:
    if value not in SOURCES:
        raise TelemetryDecodeError(f"telemetry source must be one of {', '.join(SOURCES)}")
    return value


def _vector(value: Any, name: str) -> list[float]:
    if not isinstance(value, list) or len(value) > MAX_VECTOR:
        raise TelemetryDecodeError(f"telemetry field {name} must be a list of at most {MAX_VECTOR} numbers")
    return [_number(v, name) for v in value]


def _strings(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or len(value) > 64:
        raise TelemetryDecodeError(f"telemetry field {name} must be a short list of strings")
    return [_string(v, name) for v in value]


def _counters(value: Any) -> dict[str, int]:
    if not isinstance(value, dict) or len(value) > 16 or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in value.items()):
        raise TelemetryDecodeError("telemetry field controller must be a map of counter name to a count >= 0")
    return value


def _map(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or len(value) > 64 or not all(isinstance(k, str) for k in value):
        raise TelemetryDecodeError("telemetry field latency_us must be a map of stage name to microseconds")
    return value


def is_finite_record(record: TelemetryRecord) -> bool:
    """True when every number in the record is finite (dashboards use it to flag broken outputs)."""
    numbers = [record.gate_advantage, record.support_score, *record.action]
    return all(math.isfinite(v) for v in numbers)
