"""What the safety layer costs per action, beside the cheapest possible limit (np.clip) in the same run.

    MUJOCO_GL=egl .venv/bin/python benchmarks/safety_apply.py [--spec ant] [--calls 20000]

Prints p50/p99 microseconds of `SafetyLayer.apply` on in-range and saturating actions, the same figures for a
bare `np.clip` to the spec's hard bounds, their ratio, and writes benchmarks/results/safety_apply.json.
(It was a timed unit test; wall-clock bounds belong here, not in the suite.)
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from spaars_robot.safety.limits import SafetyLayer
from spaars_robot.safety.spec import load_safety_spec


def timed(fn, actions: np.ndarray) -> np.ndarray:
    times = np.empty(len(actions))
    for i, action in enumerate(actions):
        start = time.perf_counter_ns()
        fn(action)
        times[i] = time.perf_counter_ns() - start
    return times / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="ant")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/safety_apply.json"))
    args = parser.parse_args()
    layer = SafetyLayer(load_safety_spec(args.spec))
    low, high = layer.hard_low, layer.hard_high
    rng = np.random.default_rng(0)
    out: dict = {"spec": args.spec, "calls": args.calls}
    for label, scale in (("in_range", 0.3), ("saturating", 3.0)):
        actions = rng.uniform(-scale, scale, size=(args.calls, layer.dim))
        state = layer.new_state()
        layer_us = timed(lambda a, state=state: layer.apply(a, state), actions)
        clip_us = timed(lambda a: np.clip(a, low, high), actions)
        row = {"layer_p50_us": float(np.percentile(layer_us, 50)), "layer_p99_us": float(np.percentile(layer_us, 99)),
               "clip_p50_us": float(np.percentile(clip_us, 50)), "clip_p99_us": float(np.percentile(clip_us, 99))}
        row["p50_ratio_layer_over_clip"] = row["layer_p50_us"] / row["clip_p50_us"]
        out[label] = row
        print(f"{label:10s} layer p50 {row['layer_p50_us']:.1f} us p99 {row['layer_p99_us']:.1f} us | np.clip p50 "
              f"{row['clip_p50_us']:.1f} us p99 {row['clip_p99_us']:.1f} us | ratio {row['p50_ratio_layer_over_clip']:.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
