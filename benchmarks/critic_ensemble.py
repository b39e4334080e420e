"""What a 10-member critic ensemble costs per update, against today's 2 members, in one run (issue 16).

    MUJOCO_GL=egl .venv/bin/python benchmarks/critic_ensemble.py [--dataset hopper-medium] [--seconds 5 --rounds 3]

For each update the runner performs (IQL fine-tuning, SPAARS latent phase, SPAARS gated phase), times the
project's own update with `pretrain.ensemble_size` 2 (targets: min over both) and 10 (targets: min over 2 sampled
per update, RLPD/SUPE), alternating rounds so both see the same machine load. One torch thread, as each seed
process trains. Prints updates/s and the 10/2 cost ratio; writes benchmarks/results/critic_ensemble.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as tt  # noqa: E402

from spaars_robot.config.training import TrainConfig  # noqa: E402
from spaars_robot.data.dataset import OfflineDataset  # noqa: E402

UPDATES = ("iql", "spaars_latent", "spaars_gated")
ENSEMBLES = {"2 members, min of 2": (2, None), "10 members, min of 2 sampled": (10, 2)}


def config_for(dataset_path: str, members: int, subset: int | None) -> TrainConfig:
    return TrainConfig(task="hopper", dataset=dataset_path, threads=1,
                       pretrain={"ensemble_size": members, "target_subset": subset},
                       online={"target_subset": subset})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/critic_ensemble.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset_path = tt.resolve_dataset(args.dataset)
    dataset = OfflineDataset.load(dataset_path)
    steps = {(update, label): tt.build_step(update, dataset, str(dataset_path), False,
                                            config_for(str(dataset_path), *spec))
             for update in UPDATES for label, spec in ENSEMBLES.items()}
    rates: dict = {key: [] for key in steps}
    for _ in range(args.rounds):
        for key, step in steps.items():
            for _ in range(20):  # warm-up outside the timed window
                step()
            rates[key].append(tt.time_loop(step, args.seconds).per_s)
    out = {"machine": tt.machine_info(), "load": tt.load_average(), "dataset": str(dataset_path),
           "seconds": args.seconds, "rounds": args.rounds, "threads": 1, "updates": {}}
    labels = list(ENSEMBLES)
    for update in UPDATES:
        medians = {label: statistics.median(rates[(update, label)]) for label in labels}
        ratio = medians[labels[0]] / medians[labels[1]]
        out["updates"][update] = {"updates_per_s": {k: round(v, 1) for k, v in medians.items()},
                                  "rounds": {k: [round(r, 1) for r in rates[(update, k)]] for k in labels},
                                  "cost_ratio_10_over_2": round(ratio, 3)}
        print(f"{update:14s} " + "  ".join(f"{k}: {v:7.1f}/s" for k, v in medians.items())
              + f"  cost 10/2 = {ratio:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
