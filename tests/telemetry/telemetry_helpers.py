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


SOFT_ZONE_RGB = (0xF9, 0xC7, 0x7E)  # the page's soft-zone fill (dashboard_page.drawAction)


def count_pixels(png: bytes, rgb: tuple[int, int, int], tolerance: int = 6) -> int:
    """Pixels of a screenshot within `tolerance` of a colour: proof that a canvas drew that element."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return int((np.abs(pixels - np.array(rgb, dtype=np.int16)).max(axis=-1) <= tolerance).sum())
