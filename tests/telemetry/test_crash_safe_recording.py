"""A recording survives the crash it is meant to explain: kill -9, a cut file, NaN as the schema says.

Before: `serve --record` buffered 1 MiB chunks and wrote nothing before a clean exit, so a killed server
left 0 bytes ("not a readable MCAP"), and NaN was stored as the string "nan" where the schema said number.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcap.reader import make_reader

from spaars_robot.config.tasks import load_task
from spaars_robot.errors import SpaarsError
from spaars_robot.export.onnx_export import export_bundle
from spaars_robot.export.stack import random_stack
from spaars_robot.runtime.client import Client
from spaars_robot.runtime.service import wait_for_server
from spaars_robot.runtime.sim_client import task_schema
from spaars_robot.telemetry.mcap_log import SCHEMA, TOPIC, McapRecorder, read_mcap
from spaars_robot.telemetry.record import TelemetryRecord
from tests.conftest import run_cli
from tests.runtime.runtime_helpers import free_port, hopper_info
from tests.telemetry.telemetry_helpers import make_record

pytestmark = pytest.mark.timeout(120)
FLUSH_S = 1.0  # McapRecorder's default, what `serve --record` uses
SLACK_S = 0.5  # scheduling on a loaded 2-core VM: the flusher thread wakes every FLUSH_S / 4


def _start_recording_server(tmp_path: Path) -> tuple[subprocess.Popen, str, Path]:
    bundle = tmp_path / "hopper"
    export_bundle(random_stack(11, 3, seed=0), hopper_info(), bundle)
    endpoint, recording = f"tcp://127.0.0.1:{free_port()}", tmp_path / "crash.mcap"
    server = subprocess.Popen([sys.executable, "-m", "spaars_robot.cli", "serve", "--bundle", str(bundle), "--bind",
                               endpoint, "--record", str(recording)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    return server, endpoint, recording


def _traffic(client: Client, seconds: float, rate_hz: float, answered: dict[int, float]) -> None:
    """Send observations at `rate_hz` for `seconds`; note when each reply (its seq) arrived."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        reply = client.act(np.full(11, 0.01, np.float32))
        answered[reply.seq] = time.monotonic()
        time.sleep(1.0 / rate_hz)


def test_kill_9_loses_at_most_the_last_second(tmp_path: Path) -> None:
    server, endpoint, recording = _start_recording_server(tmp_path)
    answered: dict[int, float] = {}
    try:
        with Client(endpoint, task_schema(load_task("hopper")), timeout_s=1.0, name="crash-test") as client:
            wait_for_server(client, server)
            _traffic(client, 2.0, 200, answered)
            quiet_from = time.monotonic()
            first_phase = set(answered)
            time.sleep(FLUSH_S + 2 * SLACK_S)  # traffic stops: what was written must reach the disk anyway
            _traffic(client, 2.5, 200, answered)
            killed_at = time.monotonic()
            server.send_signal(signal.SIGKILL)  # mid-traffic, no chance to write the index
    finally:
        server.kill()
        server.communicate(timeout=15)
    assert server.returncode == -signal.SIGKILL
    with pytest.raises(SpaarsError, match="record recover"):  # the indexed reader needs the footer
        list(read_mcap(recording))
    kept = {r.sequence for r in read_mcap(recording, salvage=True)}
    assert first_phase <= kept, f"{len(first_phase - kept)} records written before {quiet_from:.1f} were lost"
    old = {seq for seq, t in answered.items() if t < killed_at - FLUSH_S - SLACK_S}
    assert old <= kept, f"{len(old - kept)} records older than {FLUSH_S + SLACK_S} s at the kill were lost"
    assert kept <= set(answered)
    lost = len(answered) - len(kept)
    assert lost <= (FLUSH_S + SLACK_S) * 200, f"lost {lost} records, more than ~1 s of traffic at 200 Hz"


def _recording(path: Path, count: int, flush_s: float) -> list[TelemetryRecord]:
    """`count` records written over ~count * 2 ms, flushed every `flush_s`: several complete chunks."""
    recorder = McapRecorder(path, flush_interval_s=flush_s)
    records = []
    for i in range(count):
        records.append(make_record(i, observation=[0.5 * i] * 11))
        recorder.write(records[-1])
        time.sleep(0.002)
    recorder.close()
    return records


def _chunks(path: Path) -> list:
    """The recording's chunk index: where each flush put a chunk, and the log times it holds."""
    with open(path, "rb") as fh:
        summary = make_reader(fh).get_summary()
    assert summary is not None
    return sorted(summary.chunk_indexes, key=lambda c: c.chunk_start_offset)


def test_recover_a_cut_recording(tmp_path: Path) -> None:
    full = tmp_path / "full.mcap"
    records = _recording(full, 120, flush_s=0.05)
    chunks = _chunks(full)
    assert len(chunks) >= 5
    fourth = chunks[3]
    end_of_third = fourth.chunk_start_offset  # the third chunk's message index ends where the fourth begins
    in_three = [r for r in records if int(r.time * 1e9) < fourth.message_start_time]  # what a cut there keeps
    assert 0 < len(in_three) < len(records)
    data = full.read_bytes()
    flip = fourth.chunk_start_offset + fourth.chunk_length - 20  # inside the 4th chunk's compressed records
    cases = {
        "kill -9 mid-chunk": data[:fourth.chunk_start_offset + fourth.chunk_length // 2],
        "power loss: zeros after the last synced chunk": data[:end_of_third] + bytes(4096),
        "bit rot inside the 4th chunk": data[:flip] + bytes([data[flip] ^ 0xFF]) + data[flip + 1:],
    }
    for what, blob in cases.items():
        cut, out = tmp_path / "cut.mcap", tmp_path / "recovered.mcap"
        cut.write_bytes(blob)
        out.unlink(missing_ok=True)
        if what != "bit rot inside the 4th chunk":  # (a flipped byte leaves the footer, so the index still opens)
            with pytest.raises(SpaarsError, match="not a readable MCAP"):
                list(read_mcap(cut))
        proc = run_cli("record", "recover", str(cut), str(out))
        assert f"recovered {len(in_three)} messages" in proc.stdout, (what, proc.stdout)
        assert list(read_mcap(out)) == in_three, what  # the strict, indexed reader: the footer is back
    proc = run_cli("record", "recover", str(full), str(tmp_path / "copy.mcap"))
    assert "recovered 120 messages" in proc.stdout and "was complete" in proc.stdout
    (tmp_path / "junk.mcap").write_bytes(b"not an mcap file at all")
    proc = run_cli("record", "recover", str(tmp_path / "junk.mcap"), str(tmp_path / "x.mcap"), check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "nothing salvageable" in proc.stderr
    assert not (tmp_path / "x.mcap").exists()


def _conforms(value: Any, schema: dict[str, Any]) -> bool:
    """The JSON-schema subset SCHEMA uses: type (one or a list), enum, anyOf, items, properties, additionalProperties."""
    if "anyOf" in schema:
        return any(_conforms(value, option) for option in schema["anyOf"])
    if "enum" in schema and value not in schema["enum"]:
        return False
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        checks = {"number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                  "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
                  "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
                  "null": lambda v: v is None, "array": lambda v: isinstance(v, list),
                  "object": lambda v: isinstance(v, dict)}
        if not any(checks[k](value) for k in kinds):
            return False
    if isinstance(value, list) and "items" in schema:
        return all(_conforms(v, schema["items"]) for v in value)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return all(_conforms(v, props[k]) if k in props else extra is None or _conforms(v, extra)
                   for k, v in value.items())
    return True


def test_nan_and_inf_round_trip_as_the_schema_says(tmp_path: Path) -> None:
    assert set(SCHEMA["properties"]) == set(TelemetryRecord.__dataclass_fields__), "schema and record drifted"
    path = tmp_path / "nan.mcap"
    nan, inf = float("nan"), float("inf")
    record = make_record(0, "hold", support_score=inf, gate_advantage=nan, action_low=[-inf] * 3,
                         action_high=[inf] * 3, latency_us={"total": nan}, observation=[nan] * 11, reward=None,
                         policy_action=[nan, 0.0, -inf])
    plain = make_record(1, observation=[0.1] * 11, episode_step=3, reward=-1.5, terminated=False, truncated=True,
                        applied_action=[0.1, 0.2, 0.3])
    recorder = McapRecorder(path)
    recorder.write(record)
    recorder.write(plain)
    recorder.close()
    with open(path, "rb") as fh:
        stored = [json.loads(m.data) for _s, _c, m in make_reader(fh).iter_messages(topics=[TOPIC])]
    for message in stored:
        bad = {k: v for k, v in message.items() if not _conforms(v, SCHEMA["properties"][k])}
        assert not bad, f"fields that do not follow the recording's own schema: {bad}"
    assert stored[0]["gate_advantage"] == "nan" and stored[0]["action_high"] == ["inf"] * 3
    back = list(read_mcap(path))
    assert np.isnan(back[0].gate_advantage) and back[0].support_score == inf and back[0].action_low == [-inf] * 3
    assert np.isnan(back[0].observation).all() and back[0].reward is None and back[0].source == "hold"
    assert back[1] == plain


def test_recorder_flushes_while_running(tmp_path: Path) -> None:
    """Without a clean close, another process reads what a live recorder wrote more than a second ago."""
    path = tmp_path / "live.mcap"
    recorder = McapRecorder(path)
    try:
        for i in range(30):
            recorder.write(make_record(i))
        time.sleep(FLUSH_S + SLACK_S)
        code = ("import sys; from spaars_robot.telemetry.mcap_log import read_mcap; "
                "print(len(list(read_mcap(sys.argv[1], salvage=True))))")
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60,
                              env={**os.environ})
        assert proc.stdout.strip() == "30", proc.stderr
    finally:
        recorder.close()
