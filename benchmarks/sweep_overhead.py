"""What `spaars-robot sweep` costs per trial: locally against the same `train` commands run directly, and on Ray
against the local backend (issue 20, "BENCHMARKS.md records what the sweep costs per trial locally, and the Ray
overhead per trial").

    MUJOCO_GL=egl .venv/bin/python benchmarks/sweep_overhead.py --trials 4 --workers 2 --rounds 3  # ~20 min, 2 cores

Three configurations of the same N `smoke` trials (hopper, iql, seeds 0..N-1, `--safety-spec none`), in one
invocation, each with its own fresh runs root and pretraining cache so each does identical work:
  direct: the N `spaars-robot train` commands the sweep would run, `workers` at a time (what a shell loop does);
  local:  `spaars-robot sweep SWEEP.yaml --workers W` (planning, process start, the view, the resume checks);
  ray:    `spaars-robot sweep SWEEP.yaml --backend ray --workers W` (a local Ray started by the sweep).
Wall time is the whole command, start-up included, and so is CPU time (user + system of every process the
configuration ran and reaped: the load of a busy machine stretches wall time far more than CPU time). Ray's
trial processes are children of Ray workers that are killed, never reaped up to this script, so Ray's CPU
figure counts the driver and little else: it is recorded, and no overhead is computed from it. Per-trial overhead = (wall - direct wall) / N, from the
medians over `--rounds` rounds, each round running the three configurations back to back (interleaved, so a
change of load hits all three). The dataset
is made first (a small collected one, as the tests make) unless --dataset names one. Results: stdout and
benchmarks/results/sweep_overhead.json, with the machine and its load average (os.getloadavg) before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "sweep_overhead.json"
CLI = [sys.executable, "-m", "spaars_robot.cli"]


def _children_cpu() -> float:
    """User + system CPU seconds of every finished child process (and theirs, once reaped) of this script."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def _direct(trial_args: list[list[str]], workers: int, env: dict[str, str]) -> float:
    """The trials' own `train` commands, `workers` at a time, a new one as soon as one ends (as the sweep does)."""
    start, pending, running = time.perf_counter(), list(trial_args), []
    while pending or running:
        while pending and len(running) < workers:
            running.append(subprocess.Popen(CLI + pending.pop(0), cwd=REPO, env=env, stdout=subprocess.DEVNULL))
        for process in list(running):
            if process.poll() is not None:
                if process.returncode != 0:
                    raise SystemExit(f"train exited {process.returncode}")
                running.remove(process)
        time.sleep(0.2)
    return time.perf_counter() - start


def _sweep_file(root: Path, dataset: Path, trials: int) -> Path:
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump({"protocol": "smoke", "safety_spec": "none", "tasks": ["hopper"],
                                    "datasets": {"hopper": str(dataset)}, "algos": ["iql"],
                                    "seeds": list(range(trials)), "runs_root": str(root / "runs")}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dataset", type=Path, default=None, help="a hopper dataset (default: collect a tiny one)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the JSON written")
    args = parser.parse_args()

    from spaars_robot.sweep.spec import load_sweep
    from spaars_robot.sweep.trials import plan_trials

    base_env = {**os.environ, "MUJOCO_GL": "egl"}
    with tempfile.TemporaryDirectory(prefix="sweep_overhead_") as tmp:
        tmp_path = Path(tmp)
        dataset = args.dataset
        if dataset is None:
            _run(CLI + ["data", "collect", "--task", "hopper", "--quality", "medium", "--steps", "3000",
                        "--train-budget", "2000", "--eval-every", "1000", "--random-steps", "500", "--threads", "1",
                        "--root", str(tmp_path / "datasets")], base_env)
            dataset = tmp_path / "datasets" / "spaars" / "hopper-medium-v0"
        load_before = os.getloadavg()
        rounds: list[dict[str, float]] = []
        cpu_rounds: list[dict[str, float]] = []  # CPU seconds of everything the configuration ran (reaped children)
        loads: list[dict[str, float]] = []  # 1-min load average at the end of each configuration
        for index in range(args.rounds):
            walls: dict[str, float] = {}
            cpu_rounds.append({})
            loads.append({})
            for config in ("direct", "local", "ray"):
                root = tmp_path / f"{config}{index}"
                root.mkdir()
                sweep = _sweep_file(root, dataset, args.trials)
                env = {**base_env, "SPAARS_CACHE": str(root / "cache")}
                cpu_before = _children_cpu()
                if config == "direct":
                    spec, grids = load_sweep(sweep)
                    trial_args = [t.train_args() for t in plan_trials(spec, grids, sweep)]
                    walls[config] = _direct(trial_args, args.workers, env)
                else:
                    walls[config] = _run(CLI + ["sweep", str(sweep), "--workers", str(args.workers)]
                                         + (["--backend", "ray"] if config == "ray" else []), env)
                done = len(list((root / "runs" / "summaries").glob("*.json")))
                if done != args.trials:
                    raise SystemExit(f"{config}: {done} of {args.trials} summaries written")
                cpu_rounds[-1][config] = round(_children_cpu() - cpu_before, 2)
                loads[-1][config] = round(os.getloadavg()[0], 2)
                print(f"round {index}: {config}: {walls[config]:.1f} s wall, {cpu_rounds[-1][config]:.1f} CPU s for "
                      f"{args.trials} trials (load {loads[-1][config]:.1f})", flush=True)
            rounds.append(walls)
        load_after = os.getloadavg()

    n = args.trials
    walls = {config: statistics.median(r[config] for r in rounds) for config in rounds[0]}
    cpu = {config: statistics.median(r[config] for r in cpu_rounds) for config in cpu_rounds[0]}
    result = {
        "command": "MUJOCO_GL=egl .venv/bin/python " + " ".join(["benchmarks/sweep_overhead.py", *sys.argv[1:]]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "loadavg_before": load_before, "loadavg_after": load_after},
        "trials": n, "workers": args.workers, "protocol": "smoke", "algo": "iql",
        "rounds": [{k: round(v, 2) for k, v in r.items()} for r in rounds], "loadavg_1min_per_round": loads,
        "median_wall_seconds": {k: round(v, 2) for k, v in walls.items()},
        "cpu_seconds_per_round": cpu_rounds, "median_cpu_seconds": cpu,
        "local_cpu_overhead_seconds_per_trial": round((cpu["local"] - cpu["direct"]) / n, 2),
        "local_over_direct": round(walls["local"] / walls["direct"], 3),
        "local_overhead_seconds_per_trial": round((walls["local"] - walls["direct"]) / n, 2),
        "ray_over_local": round(walls["ray"] / walls["local"], 3),
        "ray_overhead_seconds_per_trial": round((walls["ray"] - walls["local"]) / n, 2),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
