"""What a skill bundle (SUPE / SPAARS-SUPE) costs the server per request, against a plain SPAARS bundle, in one run.

    MUJOCO_GL=egl .venv/bin/python benchmarks/skill_bundle_latency.py              # 20k calls each, kitchen sizes
    MUJOCO_GL=egl .venv/bin/python benchmarks/skill_bundle_latency.py --calls 2000  # quick look

Both bundles are random-weight stacks with the real architectures at kitchen's sizes (71 observations, 9 actions,
256x2 networks; the skill stack adds the high-level policy, the skill decoder and the clock's two extra inputs and
one output), exported like a trained one, and called as the server calls them: `PolicyRunner` (one onnxruntime
thread, IOBinding), the skill bundle with a per-client SkillClock choosing every 4 steps. Calls alternate between
the two in blocks of 500, so drift in the machine's load falls on both alike. Prints p50/p99 and their ratios;
writes benchmarks/results/skill_bundle_latency.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spaars_robot.export.bundle import load_bundle
from spaars_robot.export.onnx_export import export_bundle
from spaars_robot.export.stack import RunExportInfo, SupportCalibration, random_skill_stack, random_stack
from spaars_robot.runtime.inference import PolicyRunner

OBS_DIM, ACT_DIM, SKILL_DIM, HORIZON, HIDDEN = 71, 9, 8, 4, (256, 256)
BLOCK = 500


def info(**overrides) -> RunExportInfo:
    rng = np.random.default_rng(0)
    fields = dict(task="kitchen", obs_dim=OBS_DIM, action_dim=ACT_DIM, control_rate_hz=12.5, gate_threshold=0.0,
                  gate_hysteresis=0.05, support_threshold=1.0, run_dir="benchmark", algo="spaars", seed=0,
                  support_calibration=SupportCalibration(quantile=0.99, dataset="benchmark", samples=0,
                                                         dataset_sha256="0" * 64),
                  train_command="benchmark", config={},
                  calibration_obs=(0.1 * rng.standard_normal((16, OBS_DIM))).tolist())
    return RunExportInfo(**{**fields, **overrides})


def percentiles(samples_us: list[float]) -> dict[str, float]:
    a = np.asarray(samples_us)
    return {"n": len(a), "p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/skill_bundle_latency.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        plain = random_stack(OBS_DIM, ACT_DIM, seed=0, hidden=HIDDEN)
        skill = random_skill_stack(OBS_DIM, ACT_DIM, SKILL_DIM, HORIZON, seed=0, hidden=HIDDEN)
        export_bundle(plain, info(), Path(tmp) / "plain", safety_spec="kitchen")
        export_bundle(skill, info(algo="spaars-supe", skill_horizon=HORIZON), Path(tmp) / "skill",
                      safety_spec="kitchen")
        runners = {"spaars": PolicyRunner(load_bundle(Path(tmp) / "plain")),
                   "spaars_supe": PolicyRunner(load_bundle(Path(tmp) / "skill"))}
        clocks = {name: runner.new_skill_clock() for name, runner in runners.items()}
        obs = np.random.default_rng(1).standard_normal((BLOCK, OBS_DIM)).astype(np.float32)
        samples: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(max(1, args.calls // BLOCK)):
            for name, runner in runners.items():
                clock = clocks[name]
                for o in obs:
                    t0 = time.perf_counter()
                    runner(o, clock)
                    samples[name].append((time.perf_counter() - t0) * 1e6)
    result = {name: percentiles(s) for name, s in samples.items()}
    result["ratio_p50"] = result["spaars_supe"]["p50_us"] / result["spaars"]["p50_us"]
    result["ratio_p99"] = result["spaars_supe"]["p99_us"] / result["spaars"]["p99_us"]
    result["machine"] = {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                         "onnxruntime_threads": 1}
    for name in runners:
        print(f"{name:12s} p50 {result[name]['p50_us']:7.1f} us  p99 {result[name]['p99_us']:7.1f} us")
    print(f"skill / plain: p50 {result['ratio_p50']:.2f}x, p99 {result['ratio_p99']:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
