"""Telemetry over ZeroMQ PUB/SUB: one single-frame msgpack message per record.

Single frames (no topic frame) because every PlotJuggler version's ZMQ subscriber accepts them;
newer ones would also accept [topic, payload]. The publisher never blocks the control path: when
no subscriber keeps up, the send high-water mark is reached and records are dropped and counted.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import zmq

from spaars_robot.errors import SpaarsError
from spaars_robot.telemetry.record import TelemetryDecodeError, TelemetryRecord

if TYPE_CHECKING:
    from spaars_robot.telemetry.mcap_log import McapRecorder

DEFAULT_TELEMETRY_ENDPOINT = "tcp://127.0.0.1:5556"


class TelemetryPublisher:
    """Bind a PUB socket and publish records; optionally also write them to an MCAP recorder."""

    def __init__(self, endpoint: str = DEFAULT_TELEMETRY_ENDPOINT, context: zmq.Context | None = None,
                 recorder: McapRecorder | None = None, high_water_mark: int = 1000) -> None:
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.PUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, high_water_mark)
        try:
            self.socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.socket.close()
            raise SpaarsError(f"cannot bind telemetry PUB socket at {endpoint}: {exc}") from exc
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.recorder = recorder
        self.published = 0
        self.dropped = 0

    def publish(self, record: TelemetryRecord) -> None:
        payload = record.to_msgpack()
        try:
            self.socket.send(payload, zmq.NOBLOCK)
            self.published += 1
        except zmq.Again:
            self.dropped += 1
        if self.recorder is not None:
            self.recorder.write(record, payload)

    def close(self) -> None:
        self.socket.close(linger=0)
        if self.recorder is not None:
            self.recorder.close()


class TelemetrySubscriber:
    """Connect a SUB socket to a telemetry endpoint and decode records (malformed ones are skipped
    and counted: a viewer must not die because one message was bad)."""

    def __init__(self, endpoint: str = DEFAULT_TELEMETRY_ENDPOINT, context: zmq.Context | None = None) -> None:
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, 10_000)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.connect(endpoint)
        self.malformed = 0

    def recv(self, timeout_ms: int = 100) -> TelemetryRecord | None:
        """The next valid record, or None when none arrives within `timeout_ms`."""
        while self.socket.poll(timeout_ms):
            payload = self.socket.recv()
            try:
                return TelemetryRecord.from_msgpack(payload)
            except TelemetryDecodeError:
                self.malformed += 1
                timeout_ms = 0
        return None

    def close(self) -> None:
        self.socket.close(linger=0)
