"""Telemetry record wire form: round trip, validation, and a fuzzed decoder that never crashes."""
from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spaars_robot.telemetry.record import TelemetryDecodeError, TelemetryRecord
from tests.telemetry.telemetry_helpers import make_record


def test_round_trip_keeps_every_field_including_nan() -> None:
    record = make_record(7, "fallback", limits=["rate", "bounds"], gate_advantage=float("nan"))
    back = TelemetryRecord.from_msgpack(record.to_msgpack())
    assert math.isnan(back.gate_advantage)
    back.gate_advantage = record.gate_advantage = 0.0
    assert back == record


@pytest.mark.parametrize("change, message", [
    ({"source": "magic"}, "source must be one of"),
    ({"sequence": 1.5}, "sequence must be an integer"),
    ({"action": [0.1]}, "differ in length"),
    ({"surprise": 1}, "unknown telemetry fields"),
    ({"latency_us": {"total": "fast"}}, "latency_us.total must be a number"),
    ({"controller": {"held": -1}}, "controller must be a map"),
    ({"controller": {"ticks": 1.5}}, "controller must be a map"),
    ({"action_soft_low": [0.1], "action_soft_high": [0.2]}, "must be empty or as long as action"),
    ({"action_soft_low": [0.1, 0.1, 0.1]}, "must be empty or as long as action"),
])
def test_invalid_records_are_refused(change: dict, message: str) -> None:
    raw = msgpack.unpackb(make_record(1).to_msgpack())
    raw.update(change)
    with pytest.raises(TelemetryDecodeError, match=message):
        TelemetryRecord.from_msgpack(msgpack.packb(raw))


def test_missing_field_and_huge_message() -> None:
    raw = msgpack.unpackb(make_record(1).to_msgpack())
    del raw["support_score"]
    with pytest.raises(TelemetryDecodeError, match="lacks field 'support_score'"):
        TelemetryRecord.from_msgpack(msgpack.packb(raw))
    with pytest.raises(TelemetryDecodeError, match="exceeds"):
        TelemetryRecord.from_msgpack(b"\x00" * 100_000)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_decoder_never_crashes_on_random_bytes(payload: bytes) -> None:
    try:
        TelemetryRecord.from_msgpack(payload)
    except TelemetryDecodeError:
        pass


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(TelemetryRecord.__dataclass_fields__)), JSONISH))
def test_decoder_never_crashes_on_wrongly_typed_maps(raw: dict) -> None:
    base = msgpack.unpackb(make_record(3).to_msgpack())
    base.update(raw)
    try:
        TelemetryRecord.from_msgpack(msgpack.packb(base, use_bin_type=True))
    except TelemetryDecodeError:
        pass
