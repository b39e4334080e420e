"""The dashboard in a real headless Chromium (Debian package, driven by Playwright): it loads,
updates from a live telemetry PUB stream, and shows a fallback when the stream contains one."""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import zmq

from spaars_robot.telemetry.dashboard import Dashboard
from spaars_robot.telemetry.publisher import TelemetryPublisher
from tests.telemetry.telemetry_helpers import make_record

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path(os.environ.get("SPAARS_DASHBOARD_SCREENSHOT", "/tmp/spaars-dashboard.png"))

playwright_sync = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("SPAARS_REQUIRE_BROWSER"),
                                 reason="Debian chromium not installed (CI sets SPAARS_REQUIRE_BROWSER: there it fails)")


def stream(publisher: TelemetryPublisher, stop: threading.Event, fallback_from: threading.Event) -> None:
    """Publish at ~200 Hz: raw actions, then (once asked) a support-score excursion with fallbacks,
    a watchdog HOLD and some limit hits."""
    sequence = 0
    while not stop.is_set():
        sequence += 1
        phase = sequence % 60
        if fallback_from.is_set() and 20 <= phase < 35:
            record = make_record(sequence, "fallback", support_score=1.6 + 0.01 * phase,
                                 limits=["rate"], action=[0.5, -0.98, 0.2],
                                 latency_us={"policy": 40.0, "safety": 5.0, "total": 90.0 + phase})
        else:
            record = make_record(sequence, "raw", support_score=0.4 + 0.005 * phase,
                                 latency_us={"policy": 30.0, "safety": 4.0, "total": 50.0 + phase % 7})
        if fallback_from.is_set() and phase == 50:
            record.watchdog, record.source = "hold", "hold"
        publisher.publish(record)
        time.sleep(0.005)


def test_dashboard_loads_updates_and_shows_fallback() -> None:
    context = zmq.Context()
    publisher = TelemetryPublisher("tcp://127.0.0.1:*", context)
    board = Dashboard(telemetry_endpoint=publisher.endpoint, port=0, push_hz=10, context=context)
    stop, provoke = threading.Event(), threading.Event()
    url = board.start()
    worker = threading.Thread(target=stream, args=(publisher, stop, provoke), daemon=True)
    worker.start()
    try:
        with playwright_sync.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 820})
            page.goto(url, timeout=15_000)
            assert page.title() == "spaars-robot safety"
            page.wait_for_function("() => Number(document.getElementById('records').textContent) > 20",
                                   timeout=15_000)
            first = int(page.text_content("#records"))
            assert page.text_content("#watchdog") == "RUNNING"
            assert page.text_content("#fallbacks") == "0"
            page.wait_for_function(f"() => Number(document.getElementById('records').textContent) > {first}",
                                   timeout=10_000)  # the page keeps updating
            provoke.set()
            page.wait_for_function("() => Number(document.getElementById('fallbacks').textContent) > 0",
                                   timeout=15_000)
            page.wait_for_function("() => document.getElementById('events').textContent.includes('fallback')",
                                   timeout=10_000)
            assert "rate" in page.text_content("#limits")
            page.wait_for_function(
                "() => document.getElementById('source').textContent === 'fallback'", timeout=15_000)
            assert page.text_content("#conn") == "live"
            page.screenshot(path=str(SCREENSHOT))
            browser.close()
    finally:
        stop.set()
        worker.join(timeout=2)
        board.stop()
        publisher.close()
        context.term()
