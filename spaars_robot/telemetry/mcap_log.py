"""Record telemetry to MCAP for replay (Foxglove opens it directly), read it back, salvage a cut file.

Messages are JSON with a JSON-schema, the encoding Foxglove Studio plots without any plugin;
the live stream stays msgpack. Timestamps are the record's own time in nanoseconds.

A recording must survive the crash it is meant to explain. MCAP's writer buffers messages in a chunk
(1 MiB by default) and writes the index at `finish()`, so a killed server used to leave 0 bytes. The
recorder closes the open chunk and hands it to the OS at most `flush_interval_s` after a record was
written (inline when traffic continues, from a helper thread when it stops), and that thread fsyncs
after every flush: after kill -9 or a power loss everything but about the last second is on disk,
as complete chunks followed by a missing footer. `read_mcap(..., salvage=True)` and `recover_mcap`
read such a file record by record up to the first incomplete or corrupt one.
"""
from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcap.exceptions import EndOfFile
from mcap.reader import make_reader
from mcap.records import Channel, Message, Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType, Writer

from spaars_robot.errors import SpaarsError
from spaars_robot.telemetry.record import TelemetryDecodeError, TelemetryRecord

TOPIC = "/spaars/telemetry"
SCHEMA_NAME = "spaars_robot.TelemetryRecord"
DEFAULT_FLUSH_INTERVAL_S = 1.0
SALVAGE_RECORD_LIMIT = 64 * 2**20  # a chunk is closed every second; a longer "record" is a corrupt length field
# JSON has no NaN/inf, and a NaN policy output is exactly what a viewer must see: every number field is
# a JSON number or one of these three strings, and the schema says so.
NON_FINITE = ("nan", "inf", "-inf")
_NUM: dict[str, Any] = {"anyOf": [{"type": "number"}, {"type": "string", "enum": list(NON_FINITE)}]}
_NUMS = {"type": "array", "items": _NUM}
_OPTIONAL_NUM: dict[str, Any] = {"anyOf": [*_NUM["anyOf"], {"type": "null"}]}
SCHEMA = {
    "type": "object",
    "properties": {
        "time": _NUM, "sequence": {"type": "integer"}, "source": {"type": "string"},
        "gate_advantage": _NUM, "support_score": _NUM, "support_threshold": _NUM,
        "action": _NUMS, "action_low": _NUMS, "action_high": _NUMS,
        "action_soft_low": _NUMS, "action_soft_high": _NUMS,
        "controller": {"type": "object", "additionalProperties": {"type": "integer"}},
        "limits": {"type": "array", "items": {"type": "string"}},
        "latency_us": {"type": "object", "additionalProperties": _NUM}, "watchdog": {"type": "string"},
        "client": {"type": "string"}, "observation_ood": {"type": "boolean"},
        "observation": _NUMS, "policy_action": _NUMS, "applied_action": _NUMS,
        "episode_step": {"type": ["integer", "null"]}, "reward": _OPTIONAL_NUM,
        "terminated": {"type": ["boolean", "null"]}, "truncated": {"type": ["boolean", "null"]},
    },
}


class McapRecorder:
    """Append telemetry records to one MCAP file, durable up to about `flush_interval_s` ago.

    `flush_interval_s=None` keeps MCAP's default buffering (nothing durable before `close()`), only for
    measuring what the flushing costs (benchmarks/mcap_flush.py). `close()` writes the index.
    """

    def __init__(self, path: Path | str, flush_interval_s: float | None = DEFAULT_FLUSH_INTERVAL_S) -> None:
        if flush_interval_s is not None and not flush_interval_s > 0:
            raise SpaarsError(f"flush interval {flush_interval_s!r} s must be positive")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")  # noqa: SIM115 (lives as long as the recorder; closed in close())
        self._writer = Writer(self._file, compression=CompressionType.ZSTD)
        self._writer.start(profile="", library="spaars-robot")
        schema_id = self._writer.register_schema(SCHEMA_NAME, "jsonschema", json.dumps(SCHEMA).encode())
        self._channel = self._writer.register_channel(TOPIC, "json", schema_id)
        self.written = 0
        self.flushes = 0
        self._interval = flush_interval_s
        self._lock = threading.Lock()  # the writer is shared with the flusher thread
        self._unflushed = 0
        self._last_flush = time.monotonic()
        self._flushed = threading.Event()  # set after each flush: the flusher thread fsyncs it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if flush_interval_s is not None:
            with self._lock:
                self._flush_locked()  # header, schema and channel are on disk before the first record
            self._thread = threading.Thread(target=self._flusher, name="mcap-flusher", daemon=True)
            self._thread.start()

    def write(self, record: TelemetryRecord, _payload: bytes | None = None) -> None:
        """Add one record; flushes inline (after the reply was sent) when the last flush is due."""
        stamp = int(record.time * 1e9)
        data = json.dumps(_json_safe(record)).encode()
        with self._lock:
            self._writer.add_message(self._channel, log_time=stamp, data=data, publish_time=stamp,
                                     sequence=record.sequence & 0xFFFFFFFF)
            self.written += 1
            self._unflushed += 1
            if self._interval is not None and time.monotonic() - self._last_flush >= self._interval:
                self._flush_locked()

    def _flush_locked(self) -> None:
        """Close the open chunk and hand it to the OS (kill -9 safe); the flusher thread then fsyncs."""
        self._writer.flush()
        self._unflushed = 0
        self._last_flush = time.monotonic()
        self.flushes += 1
        self._flushed.set()

    def _flusher(self) -> None:
        """fsync after every flush (power-loss safe), off the serving thread; flush when traffic stopped."""
        assert self._interval is not None
        while not self._stop.is_set():
            if self._flushed.wait(self._interval / 4):  # so a record waits at most 1.25 intervals
                self._flushed.clear()
                os.fsync(self._file.fileno())
                continue
            with self._lock:
                if self._unflushed and time.monotonic() - self._last_flush >= self._interval:
                    self._flush_locked()

    def close(self) -> None:
        if self._file.closed:
            return
        if self._thread is not None:
            self._stop.set()
            self._flushed.set()  # wake it now rather than at its next poll
            self._thread.join()
        with self._lock:
            self._writer.finish()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def _json_safe(record: TelemetryRecord) -> dict[str, Any]:
    """The record as JSON-able values: NaN/inf become the strings "nan"/"inf"/"-inf" (see SCHEMA)."""

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
    if isinstance(value, str) and value in NON_FINITE:
        return float(value)
    if isinstance(value, list):
        return [_json_restore(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_restore(v) for k, v in value.items()}
    return value


_TEXT_FIELDS = frozenset({"source", "watchdog", "client", "limits"})  # never numbers, so never "nan"


def _decode(data: bytes) -> TelemetryRecord:
    raw = json.loads(data)
    if not isinstance(raw, dict):
        raise TelemetryDecodeError("telemetry message is not a JSON object")
    return TelemetryRecord.from_dict({k: v if k in _TEXT_FIELDS else _json_restore(v) for k, v in raw.items()})


@dataclass(frozen=True)
class Salvage:
    """What a record-by-record read of a possibly cut MCAP file found."""

    schemas: dict[int, Schema]
    channels: dict[int, Channel]
    messages: list[Message]
    complete: bool  # the footer was reached: nothing was lost
    problem: str  # why the read stopped early ("" when complete)


def salvage_mcap(path: Path | str) -> Salvage:
    """Read every complete record of `path` in file order, stopping at the first cut or corrupt one.

    A recorder killed mid-write leaves whole, CRC-checked chunks followed by a partial one (or zeros after
    a power loss) and no footer; mcap's indexed reader needs the footer, its stream reader raises at the
    cut. Chunk CRCs are checked, so a damaged chunk ends the salvage rather than yielding garbage.
    """
    path = Path(path)
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    messages: list[Message] = []
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed below, after the read that may raise half-way)
    except OSError as exc:
        raise SpaarsError(f"{path}: cannot open recording ({exc.strerror})") from exc
    if os.fstat(fh.fileno()).st_size == 0:
        fh.close()
        raise SpaarsError(f"{path}: empty file (0 bytes): its recorder wrote nothing before it stopped")
    complete, problem = False, ""
    with fh:
        try:
            for record in StreamReader(fh, validate_crcs=True, record_size_limit=SALVAGE_RECORD_LIMIT).records:
                if isinstance(record, Schema):
                    schemas[record.id] = record
                elif isinstance(record, Channel):
                    channels[record.id] = record
                elif isinstance(record, Message):
                    messages.append(record)
            complete = True
        except EndOfFile:
            problem = "the file ends inside a record (no footer: the writer was stopped)"
        except Exception as exc:  # noqa: BLE001 - mcap's own errors, CRC and zstd ones at a damaged chunk
            problem = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    if not complete and not schemas and not channels and not messages:
        raise SpaarsError(f"{path}: not a readable MCAP telemetry recording, nothing salvageable ({problem})")
    return Salvage(schemas, channels, messages, complete, problem)


def _telemetry_messages(salvage: Salvage) -> list[Message]:
    topics = {cid for cid, channel in salvage.channels.items() if channel.topic == TOPIC}
    return sorted((m for m in salvage.messages if m.channel_id in topics), key=lambda m: m.log_time)


def read_mcap(path: Path | str, *, salvage: bool = False) -> Iterator[TelemetryRecord]:
    """Replay a recording in log-time order; a truncated or foreign file is one SpaarsError.

    `salvage=True` also reads a file whose recorder was killed (no footer): every complete chunk.
    """
    path = Path(path)
    if salvage:
        for message in _telemetry_messages(salvage_mcap(path)):
            yield _decode(message.data)
        return
    try:
        with open(path, "rb") as fh:
            for _schema, _channel, message in make_reader(fh).iter_messages(topics=[TOPIC]):
                yield _decode(message.data)
    except TelemetryDecodeError:
        raise
    except FileNotFoundError as exc:
        raise SpaarsError(f"{path}: recording not found") from exc
    except Exception as exc:  # mcap raises its own hierarchy plus struct/EOF errors on truncation
        raise SpaarsError(f"{path}: not a readable MCAP telemetry recording ({exc}); if its recorder was killed, "
                          f"`spaars-robot record recover {path} OUT.mcap` salvages what was written") from exc


@dataclass(frozen=True)
class Recovery:
    """The outcome of `recover_mcap`, for the one line the CLI prints."""

    messages: int
    complete: bool
    problem: str


def recover_mcap(src: Path | str, dst: Path | str) -> Recovery:
    """Copy every salvageable message of `src` into a new, indexed MCAP file `dst` (never in place)."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and dst.resolve() == src.resolve():
        raise SpaarsError(f"{dst}: the output must be a new file, not the recording being recovered")
    found = salvage_mcap(src)
    if not found.messages:
        raise SpaarsError(f"{src}: no complete message to recover ({found.problem or 'the recording is empty'})")
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(dst.name + ".partial")
    with open(partial, "wb") as fh:
        writer = Writer(fh, compression=CompressionType.ZSTD)
        writer.start(profile="", library="spaars-robot record recover")
        schema_ids = {sid: writer.register_schema(s.name, s.encoding, s.data) for sid, s in found.schemas.items()}
        channel_ids = {cid: writer.register_channel(c.topic, c.message_encoding, schema_ids.get(c.schema_id, 0),
                                                    c.metadata)
                       for cid, c in found.channels.items()}
        kept = [m for m in found.messages if m.channel_id in channel_ids]  # else its channel record was lost
        for m in kept:
            writer.add_message(channel_ids[m.channel_id], log_time=m.log_time, data=m.data,
                               publish_time=m.publish_time, sequence=m.sequence)
        writer.finish()
        fh.flush()
        os.fsync(fh.fileno())
    partial.replace(dst)
    return Recovery(len(kept), found.complete, found.problem)
