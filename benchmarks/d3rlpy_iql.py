"""d3rlpy's IQL updates/s on one of our Minari-layout datasets; run by d3rlpy's own venv, not ours.

    benchmarks/.venv-d3rlpy/bin/python benchmarks/d3rlpy_iql.py --dataset PATH --seconds 10

Called by benchmarks/train_throughput.py once per round, interleaved with our IQL update, so the two
are compared under the same machine load. d3rlpy is not a project dependency, so this file imports
nothing from spaars_robot: it reads main_data.hdf5 with h5py (episode groups: observations [T+1],
actions, rewards, terminations, truncations) and builds a d3rlpy MDPDataset. The timed loop is the
body of d3rlpy's own `fit()` (sample_transition_batch + update) without its logger and progress bar.
Prints one JSON line. With --wait-go (used by benchmarks/seed_parallelism.py to start several processes'
windows together) it prints `ready` after the warm-up and starts its window when a line arrives on stdin.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import d3rlpy
import h5py
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode


def load_mdp_dataset(path: Path) -> d3rlpy.dataset.ReplayBuffer:
    """Episodes as d3rlpy episodes: terminal on termination, timeout on truncation (last step of an episode)."""
    obs, actions, rewards, terminals, timeouts = [], [], [], [], []
    with h5py.File(path / "data" / "main_data.hdf5", "r") as f:
        for key in sorted(f.keys(), key=lambda k: int(k.split("_")[-1])):
            ep = f[key]
            n = ep["actions"].shape[0]
            obs.append(ep["observations"][:n])
            actions.append(ep["actions"][:])
            rewards.append(ep["rewards"][:])
            term = ep["terminations"][:].astype(np.float32)
            timeout = np.zeros(n, np.float32)
            if term[-1] == 0:
                timeout[-1] = 1.0
            terminals.append(term)
            timeouts.append(timeout)
    cat = np.concatenate
    return d3rlpy.dataset.MDPDataset(cat(obs).astype(np.float32), cat(actions).astype(np.float32),
                                     cat(rewards).astype(np.float32), cat(terminals), cat(timeouts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--wait-go", action="store_true", help="print ready, then wait for a line on stdin")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    d3rlpy.seed(0)
    dataset = load_mdp_dataset(args.dataset)
    iql = d3rlpy.algos.IQLConfig(batch_size=args.batch_size).create(device="cpu:0")  # 256x256 MLPs, 2 critics
    iql.build_with_dataset(dataset)

    def step() -> None:
        iql.update(dataset.sample_transition_batch(args.batch_size))

    for _ in range(5):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    if args.wait_go:
        print("ready", flush=True)
        sys.stdin.readline()
    start = time.time()
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        step()
        n += 1
        if time.perf_counter() - t0 >= args.seconds:
            break
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"d3rlpy": d3rlpy.__version__, "torch": torch.__version__, "updates": n,
                      "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "updates_per_s": round(n / wall, 2),
                      "flops_per_update": int(counter.get_total_flops()), "transitions": dataset.transition_count,
                      "start": start, "end": time.time()}))


if __name__ == "__main__":
    main()
