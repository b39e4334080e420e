"""Record telemetry to MCAP for replay (Foxglove opens it directly) and read it back.

Messages are JSON with a JSON-schema, the encoding Foxglove Studio plots without any plugin;
the live stream stays msgpack. Timestamps are the record's own time in nanoseconds.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mcap.reader import make_reader
from mcap.writer import CompressionType, Writer

from spaars_robot.errors import SpaarsError
from spaars_robot.telemetry.record import TelemetryDecodeError, TelemetryRecord

TOPIC = "/spaars/telemetry"
SCHEMA_NAME = "spaars_robot.TelemetryRecord"
_NUM = {"type": "number"}
SCHEMA = {
    "type": "object",
    "properties": {
        "time": _NUM, "sequence": {"type": "integer"}, "source": {"type": "string"},
        "gate_advantage": _NUM, "support_score": _NUM, "support_threshold": _NUM,
        "action": {"type": "array", "items": _NUM}, "action_low": {"type": "array", "items": _NUM},
        "action_high": {"type": "array", "items": _NUM}, "limits": {"type": "array", "items": {"type": "string"}},
        "action_soft_low": {"type": "array", "items": _NUM}, "action_soft_high": {"type": "array", "items": _NUM},
        "controller": {"type": "object", "additionalProperties": {"type": "integer"}},
        "latency_us": {"type": "object", "additionalProperties": _NUM}, "watchdog": {"type": "string"},
        "client": {"type": "string"}, "observation_ood": {"type": "boolean"},
    },
}


class McapRecorder:
    """Append telemetry records to one MCAP file; `close()` writes the index so readers can seek."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")  # noqa: SIM115 (lives as long as the recorder; closed in close())
        self._writer = Writer(self._file, compression=CompressionType.ZSTD)
        self._writer.start(profile="", library="spaars-robot")
        schema_id = self._writer.register_schema(SCHEMA_NAME, "jsonschema", json.dumps(SCHEMA).encode())
        self._channel = self._writer.register_channel(TOPIC, "json", schema_id)
        self.written = 0

    def write(self, record: TelemetryRecord, _payload: bytes | None = None) -> None:
        stamp = int(record.time * 1e9)
        data = json.dumps(_json_safe(record)).encode()
        self._writer.add_message(self._channel, log_time=stamp, data=data, publish_time=stamp,
                                 sequence=record.sequence & 0xFFFFFFFF)
        self.written += 1

    def close(self) -> None:
        if not self._file.closed:
            self._writer.finish()
            self._file.close()


def _json_safe(record: TelemetryRecord) -> dict[str, Any]:
    """JSON has no NaN/inf; write them as the strings "nan"/"inf"/"-inf" and turn them back on read."""

    def fix(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return value

    return {k: fix(v) for k, v in record.to_dict().items()}


def _json_restore(value: Any) -> Any:
    if value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, list):
        return [_json_restore(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_restore(v) for k, v in value.items()}
    return value


def read_mcap(path: Path | str) -> Iterator[TelemetryRecord]:
    """Replay a recording in log-time order; a truncated or foreign file is one SpaarsError."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            for _schema, channel, message in make_reader(fh).iter_messages(topics=[TOPIC]):
                raw = json.loads(message.data)
                yield TelemetryRecord.from_dict({k: _json_restore(v) for k, v in raw.items()})
    except TelemetryDecodeError:
        raise
    except FileNotFoundError as exc:
        raise SpaarsError(f"{path}: recording not found") from exc
    except Exception as exc:  # mcap raises its own hierarchy plus struct/EOF errors on truncation
        raise SpaarsError(f"{path}: not a readable MCAP telemetry recording ({exc})") from exc
