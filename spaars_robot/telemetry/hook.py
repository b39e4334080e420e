"""The server's one per-request telemetry hook: publish the record and update the metrics.

Both sinks are optional, so the server calls one thing whatever is switched on, and a failure to
publish (no subscriber, full queue) never reaches the control path.
"""
from __future__ import annotations

from pathlib import Path

from spaars_robot.telemetry.mcap_log import McapRecorder
from spaars_robot.telemetry.metrics import SafetyMetrics
from spaars_robot.telemetry.publisher import TelemetryPublisher
from spaars_robot.telemetry.record import TelemetryRecord


class TelemetryHook:
    """`hook(record)` once per served request; `close()` on shutdown."""

    def __init__(self, publisher: TelemetryPublisher | None = None, metrics: SafetyMetrics | None = None,
                 recorder: McapRecorder | None = None) -> None:
        """`recorder` is for recording without a live stream; a publisher may carry its own recorder."""
        self.publisher = publisher
        self.metrics = metrics
        self.recorder = recorder

    def __call__(self, record: TelemetryRecord) -> None:
        if self.publisher is not None:
            self.publisher.publish(record)
        if self.recorder is not None:
            self.recorder.write(record)
        if self.metrics is not None:
            self.metrics.observe(record)

    def watchdog(self, state_entered: str, new_deadline_misses: int) -> None:
        """A controller reported its watchdog (server `on_watchdog`): count transitions and deadline misses."""
        if self.metrics is not None:
            if state_entered:
                self.metrics.watchdog_transition(state_entered)
            if new_deadline_misses:
                self.metrics.deadline_miss(new_deadline_misses)

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.recorder is not None:
            self.recorder.close()


def make_telemetry_hook(endpoint: str | None, metrics_port: int | None, record: Path | None,
                        support_threshold: float, build_info: dict[str, str] | None = None):
    """The per-request TelemetryHook for `serve`, or None when no sink is asked for (the lean path).

    `build_info` (keyword arguments of `SafetyMetrics.set_build_info`) becomes the `spaars_build_info` metric.
    """
    if endpoint is None and metrics_port is None and record is None:
        return None
    hook = TelemetryHook()
    try:
        if endpoint is not None:
            hook.publisher = TelemetryPublisher(endpoint)
        if record is not None:
            hook.recorder = McapRecorder(record)
        if metrics_port is not None:
            hook.metrics = SafetyMetrics()
            hook.metrics.support_threshold.set(support_threshold)
            if build_info is not None:
                hook.metrics.set_build_info(**build_info)
            hook.metrics.serve(metrics_port)
    except BaseException:
        hook.close()
        raise
    return hook
