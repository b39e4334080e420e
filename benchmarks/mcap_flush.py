"""What crash-safe recording costs: McapRecorder.write with the 1 s flush + fsync vs MCAP's plain buffering.

    .venv/bin/python benchmarks/mcap_flush.py [--seconds 3] [--repeats 2]

Writes realistic Hopper telemetry records (observation, actions, outcome) as fast as one thread can,
for `--seconds` per policy, policies interleaved `--repeats` times in the same run: `flush_interval_s`
None (MCAP's 1 MiB chunks, nothing durable before close: the old behaviour), 1.0 (the default, what
`serve --record` uses) and 0.1. Reports records/s, mean and p99.9 / max microseconds per `write` (the
inline flush is the spike; the fsync runs on the recorder's own thread), the process's CPU time per
record (both threads; robust to other load on a shared machine), file size, medians over the repeats, and writes
benchmarks/results/mcap_flush.json. At a 125 Hz control rate a recorder writes 125 records/s.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from spaars_robot.telemetry.mcap_log import McapRecorder
from spaars_robot.telemetry.record import TelemetryRecord


def record(i: int, rng: np.random.Generator) -> TelemetryRecord:
    return TelemetryRecord(
        time=time.time(), sequence=i, source="latent", gate_advantage=float(rng.normal()),
        support_score=float(rng.random()), support_threshold=1.0, action=rng.uniform(-1, 1, 3).tolist(),
        action_low=[-0.98] * 3, action_high=[0.98] * 3, limits=["soft_zone"],
        latency_us={"decode": 4.0, "policy": 31.0, "decide": 2.0, "safety": 4.0, "encode": 3.0, "total": 55.0},
        client="bench#1", observation=rng.normal(size=11).tolist(), policy_action=rng.uniform(-1, 1, 3).tolist(),
        episode_step=i, reward=float(rng.normal()), terminated=False, truncated=False,
        applied_action=rng.uniform(-1, 1, 3).tolist())


def run(path: Path, flush_s: float | None, seconds: float) -> dict:
    rng = np.random.default_rng(0)
    records = [record(i, rng) for i in range(2000)]  # built outside the timed loop
    recorder = McapRecorder(path, flush_interval_s=flush_s)
    times: list[int] = []
    cpu_start = time.process_time()  # this process's CPU, both threads: robust to other load on the machine
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        r = records[i % len(records)]
        t0 = time.perf_counter_ns()
        recorder.write(r)
        times.append(time.perf_counter_ns() - t0)
        i += 1
    elapsed = time.perf_counter() - start
    flushes = recorder.flushes
    recorder.close()
    cpu = time.process_time() - cpu_start
    us = np.asarray(times) / 1e3
    return {"records": i, "records_per_s": i / elapsed, "mean_us": float(us.mean()), "cpu_us": cpu / i * 1e6,
            "p50_us": float(np.percentile(us, 50)), "p999_us": float(np.percentile(us, 99.9)),
            "max_us": float(us.max()), "flushes": flushes, "bytes_per_record": path.stat().st_size / i}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mcap_flush.json"))
    args = parser.parse_args()
    policies = {"buffered (old)": None, "flush 1 s (default)": 1.0, "flush 0.1 s": 0.1}
    results: dict[str, list[dict]] = {name: [] for name in policies}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, flush_s in policies.items():
                results[name].append(run(Path(tmp) / "bench.mcap", flush_s, args.seconds))
    summary = {}
    for name, runs in results.items():  # the median of the repeats, metric by metric
        med = {key: float(np.median([r[key] for r in runs])) for key in runs[0]}
        summary[name] = {**med, "repeats_records_per_s": [round(r["records_per_s"]) for r in runs]}
        print(f"{name:22s} {med['records_per_s']:8.0f} records/s  CPU {med['cpu_us']:5.1f} us/record  "
              f"wall mean {med['mean_us']:5.1f} p50 {med['p50_us']:5.1f} p99.9 {med['p999_us']:7.1f} "
              f"max {med['max_us']:8.1f} us  {med['flushes']:.0f} flushes  {med['bytes_per_record']:.0f} B/record")
    base = summary["buffered (old)"]
    for name in ("flush 1 s (default)", "flush 0.1 s"):
        summary[name]["cpu_overhead_us_per_record"] = summary[name]["cpu_us"] - base["cpu_us"]
        print(f"{name}: {summary[name]['cpu_overhead_us_per_record']:+.2f} us CPU per record vs buffered "
              f"(p50 write {summary[name]['p50_us'] - base['p50_us']:+.2f} us)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seconds": args.seconds, "repeats": args.repeats, "policies": summary},
                                   indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
