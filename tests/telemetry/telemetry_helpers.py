"""Hand-made telemetry records shared by the telemetry tests."""
from __future__ import annotations

import time

from spaars_robot.telemetry.record import TelemetryRecord


def make_record(sequence: int, source: str = "raw", support_score: float = 0.5, **overrides) -> TelemetryRecord:
    fields = {
        "time": time.time(), "sequence": sequence, "source": source, "gate_advantage": 0.12,
        "support_score": support_score, "support_threshold": 1.0, "action": [0.1, -0.4, 0.98],
        "action_low": [-0.98] * 3, "action_high": [0.98] * 3, "limits": [],
        "latency_us": {"decode": 4.0, "policy": 31.0, "safety": 4.0, "total": 55.0},
        "watchdog": "running", "client": "robot1",
    }
    fields.update(overrides)
    return TelemetryRecord(**fields)
