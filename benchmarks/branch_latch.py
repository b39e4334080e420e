"""What the latch fix of 2026-12-06 changes in the branched ground truth (issue 16).

Before 2026-12-06 every branch (train/branching.py) began with the continuation's critic-gate latch reset to closed,
so after the first action the "deployed policy" had to re-pass the gate's entry test, which a latching gate rarely
does: the continuation was more latent than the policy that was deployed. Branches now continue from the deployed
latch at the state (`gate_open=SavedState.gate_latch`). This branches the same states both ways, with the same
common random numbers, and reports how many states' measured difference (raw first action minus latent, H-step
discounted return) changed, how many changed sign, and the mean difference each way -- so the committed results
measured with the reset latch (benchmarks/gate_accuracy.py's, round 1 of `gate fit` on critic-gate runs) can be read
with the size of the error known.

    MUJOCO_GL=egl .venv/bin/python benchmarks/branch_latch.py runs/hopper-spaars-short/seed0 --states 100 \\
        --out benchmarks/results/branch_latch_hopper_seed0.json

Cost: states x repeats x 4 branches of `horizon` steps (100 states: ~2 min of one core on hopper).
States: `gate fit`'s first-round stream (5,000,000 + i), every `--stride` steps.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from spaars_robot.data.files import atomic_write_json
from spaars_robot.train.branching import branch_differences, collect_states, gate_inputs, load_gated_agent
from spaars_robot.train.gate_fit import GATE_FIT_SEED_BASE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--states", type=int, default=100)
    parser.add_argument("--stride", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    config, task, agent, nets, layer = load_gated_agent(args.run)
    with torch.no_grad():
        states = collect_states(agent, task, args.states, args.stride, layer, seed_base=GATE_FIT_SEED_BASE)
        seen = gate_inputs(agent, nets, states, config.online.gate.kappa)
        measured = {}
        for name, latch in (("reset_latch", False), ("deployed_latch", True)):
            kept = states if latch else [s._replace(gate_latch=None) for s in states]  # None: a reset latch
            measured[name] = branch_differences(task, agent, kept, seen.raw, seen.lat, args.horizon,
                                                config.online.gamma, 0.1, args.repeats, layer).mean(1)
    old, new = measured["reset_latch"], measured["deployed_latch"]
    changed = np.abs(old - new) > 1e-9
    result = {"run": str(args.run), "task": task.name, "states": len(states), "repeats": args.repeats,
              "horizon": args.horizon, "deployed_gate_open_share": float(np.mean([s.deployed_raw for s in states])),
              "states_changed": int(changed.sum()), "sign_agreement": float(np.mean((old > 0) == (new > 0))),
              "mean_difference": {"reset_latch": float(old.mean()), "deployed_latch": float(new.mean())},
              "max_abs_change": float(np.abs(old - new).max()), "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(result, indent=1))
    if args.out is not None:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
