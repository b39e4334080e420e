"""Env steps per second of kitchen and antmaze-medium beside Hopper, measured the same way in the same run.

    MUJOCO_GL=egl nice -n 10 .venv/bin/python benchmarks/robotics_env_speed.py [--seconds 5] [--rounds 3]

Each task's env as training builds it (`make_env(task)`: the flat observation, no safety layer) is stepped with
seeded uniform random actions for `--seconds`, resets included, in rounds that interleave the tasks, so that
the load of a shared machine falls on all of them alike. Prints and writes (benchmarks/results/
robotics_env_speed.json) the median steps/s of each task over the rounds, its ratio to Hopper-v5's, and the
machine's load average before and after: on a loaded machine the absolute rates drop, the ratios much less.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from spaars_robot.config.tasks import load_task
from spaars_robot.envs import make_env

TASKS = ("hopper", "kitchen", "antmaze-medium")


def steps_per_second(name: str, seconds: float, seed: int) -> float:
    """Random-action steps/s of the task's env for about `seconds` (env construction not timed)."""
    task = load_task(name)
    env = make_env(task)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    env.reset(seed=seed)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            _, _, terminated, truncated, _ = env.step(rng.uniform(low, high))
            if terminated or truncated:
                env.reset()
        steps += 100
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="stepping time per task per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/robotics_env_speed.json"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    rates: dict[str, list[float]] = {name: [] for name in TASKS}
    for round_index in range(args.rounds):
        for name in TASKS:
            rates[name].append(steps_per_second(name, args.seconds, seed=round_index))
    median = {name: statistics.median(values) for name, values in rates.items()}
    result = {
        "command": "MUJOCO_GL=egl nice -n 10 .venv/bin/python benchmarks/robotics_env_speed.py "
                   f"--seconds {args.seconds:g} --rounds {args.rounds}",
        "env_ids": {name: load_task(name).env_id for name in TASKS},
        "steps_per_second_median": {name: round(v, 1) for name, v in median.items()},
        "steps_per_second_rounds": {name: [round(v, 1) for v in values] for name, values in rates.items()},
        "ratio_to_hopper": {name: round(median[name] / median["hopper"], 4) for name in TASKS},
        "loadavg_1_5_15_before": [round(x, 2) for x in load_before],
        "loadavg_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
    }
    for name in TASKS:
        print(f"{name:16s} {result['env_ids'][name]:20s} {median[name]:9.0f} steps/s  "
              f"{result['ratio_to_hopper'][name]:.3f} x hopper  rounds {result['steps_per_second_rounds'][name]}")
    print(f"load average before {result['loadavg_1_5_15_before']}, after {result['loadavg_1_5_15_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
