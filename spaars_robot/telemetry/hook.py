"""The server's one per-request telemetry hook: publish the record and update the metrics.

Both sinks are optional, so the server calls one thing whatever is switched on, and a failure to
publish (no subscriber, full queue) never reaches the control path.
"""
from __future__ import annotations

from spaars_robot.telemetry.metrics import SafetyMetrics
from spaars_robot.telemetry.publisher import TelemetryPublisher
from spaars_robot.telemetry.record import TelemetryRecord


class TelemetryHook:
    """`hook(record)` once per served request; `close()` on shutdown."""

    def __init__(self, publisher: TelemetryPublisher | None = None, metrics: SafetyMetrics | None = None) -> None:
        self.publisher = publisher
        self.metrics = metrics

    def __call__(self, record: TelemetryRecord) -> None:
        if self.publisher is not None:
            self.publisher.publish(record)
        if self.metrics is not None:
            self.metrics.observe(record)

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
        if self.metrics is not None:
            self.metrics.close()
