"""Several seeds on this CPU: parallel 1-thread processes, one process, or one batched network (issue 3,
"several seeds: batched networks or parallel processes, whichever measures faster"), in one run.

    MUJOCO_GL=egl .venv/bin/python benchmarks/seed_parallelism.py --seconds 8 --rounds 3     # ~6 min, idle machine

For each online update (IQL, SPAARS latent phase, SPAARS gated phase, SAC; the real classes, batch sampling
included, via train_throughput.build_step) it measures aggregate updates/s over all seeds for
  1 process x 2 threads (one seed), 1 process x 1 thread (one seed),
  2 processes x 1 thread (two seeds side by side: how the `short` grid ran),
  5 processes x 1 thread (five seeds at once),
the same process configurations of d3rlpy's IQL (`d3rlpy_iql`, in its own venv, BENCHMARKS.md says how to make
it; skipped with a note if that venv is missing), so our IQL is compared with it seed count by seed count,
and for the IQL update also 5 seeds stacked into one batched network (torch.func.vmap over stacked
parameters, one fused Adam over the stacked tensors) at 2 and 1 threads. The processes of a configuration
load, warm up, then start their timed windows together on a signal from this script, so start-up is not
counted; aggregate = all updates / (last end - first start). Configurations are interleaved round by round
and medians reported, so every ratio is between numbers measured side by side.
Results: a table on stdout and benchmarks/results/seed_parallelism.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as tt  # noqa: E402  (sibling benchmark: same update closures and timing loop)

from spaars_robot.algos.iql import iql_losses  # noqa: E402
from spaars_robot.data.dataset import OfflineDataset  # noqa: E402
from spaars_robot.train.pretrain import normalized_offline_buffer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "seed_parallelism.json"
ALGOS = ("iql", "spaars_latent", "spaars_gated", "sac", "d3rlpy_iql")
SEEDS = 5
PROCESS_CONFIGS = {"1 process x 2 threads": (1, 2), "1 process x 1 thread": (1, 1),
                   "2 processes x 1 thread": (2, 1), "5 processes x 1 thread": (5, 1)}


class IQLNets(nn.Module):
    """The networks one IQL update trains, plus its target critic, as one module (for stacking)."""

    def __init__(self, nets, pretrain_cfg) -> None:
        super().__init__()
        self.critic, self.value, self.actor = nets.critic, nets.value, nets.raw_policy
        self.critic_target = copy.deepcopy(nets.critic)
        self.pretrain_cfg = pretrain_cfg

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        cfg = self.pretrain_cfg
        value_loss, critic_loss, actor_loss, _ = iql_losses(batch, self.critic, self.critic_target, self.value,
                                                            self.actor, cfg.gamma, cfg.expectile, cfg.awr_beta,
                                                            cfg.awr_max_weight)
        return value_loss + critic_loss + actor_loss


def batched_iql_step(dataset: OfflineDataset, dataset_path: str, seeds: int):
    """One IQL update of `seeds` independent seeds as one vmapped computation; returns (step, check)."""
    config = tt.small_train_config(dataset_path)
    models = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        nets = tt.random_nets(dataset, config.pretrain)
        models.append(IQLNets(nets, config.pretrain))
    offline = normalized_offline_buffer(dataset, tt.random_nets(dataset, config.pretrain))
    params, buffers = stack_module_state(models)
    trainable = {k: v for k, v in params.items() if not k.startswith("critic_target.")}
    target = {k: v for k, v in params.items() if k.startswith("critic_target.")}
    base = copy.deepcopy(models[0]).to("meta")  # structure only; the stacked tensors are passed in

    def loss(p, t, b, batch):
        return functional_call(base, ({**p, **t}, b), (batch,))

    per_seed_grad = vmap(grad(loss), in_dims=(0, 0, 0, 0))
    opt = torch.optim.Adam(list(trainable.values()), lr=config.online.lr, fused=True)
    generator = torch.Generator().manual_seed(0)
    size = offline.size
    batch_size = config.online.batch_size

    def sample() -> dict[str, torch.Tensor]:
        idx = torch.randint(size, (seeds, batch_size), generator=generator)
        return {k: getattr(offline, k)[idx] for k in ("obs", "action", "reward", "next_obs", "done")}

    def step() -> None:
        grads = per_seed_grad(trainable, target, buffers, sample())
        for name, tensor in trainable.items():
            tensor.grad = grads[name]
        opt.step()
        with torch.no_grad():
            for name, tensor in target.items():
                tensor.lerp_(trainable[name.replace("critic_target.", "critic.")], config.pretrain.tau)

    @torch.no_grad()
    def check() -> float:
        """Max |vmapped loss - the same seed's loss computed alone| on one batch: the batched net does the same work."""
        batch = sample()
        batched = vmap(loss)(trainable, target, buffers, batch)
        alone = torch.stack([models[i]({k: v[i] for k, v in batch.items()}) for i in range(seeds)])
        return float((batched - alone).abs().max())

    return step, check


def worker(dataset_path: Path, name: str, threads: int, seconds: float, batched: int) -> None:
    """Child: build, warm up, say ready, wait for `go` on stdin, time one window, print it as JSON."""
    torch.set_num_threads(threads)
    dataset = OfflineDataset.load(dataset_path)
    if batched:
        step, check = batched_iql_step(dataset, str(dataset_path), batched)
        error = check()
    else:
        step, error = tt.build_step(name, dataset, str(dataset_path), bf16=False), 0.0
    for _ in range(5):
        step()
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.time()
    rate = tt.time_loop(step, seconds)
    print(json.dumps({"start": start, "end": time.time(), "updates": rate.updates * max(batched, 1),
                      "cpu_s": rate.cpu_s, "check_max_abs_diff": error}), flush=True)


def worker_command(dataset_path: Path, name: str, threads: int, seconds: float, batched: int) -> list[str]:
    """The child process for one seed: this script's worker, or d3rlpy's IQL in d3rlpy's venv."""
    common = ["--dataset", str(dataset_path), "--threads", str(threads), "--seconds", str(seconds)]
    if name == "d3rlpy_iql":
        return [str(tt.D3RLPY_PYTHON), str(tt.HERE / "d3rlpy_iql.py"), *common, "--wait-go"]
    return [sys.executable, __file__, *common, "--worker", name, "--batched", str(batched)]


def run_config(dataset_path: Path, name: str, processes: int, threads: int, seconds: float, batched: int = 0) -> dict:
    cmd = worker_command(dataset_path, name, threads, seconds, batched)
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    for p in procs:
        line = "?"
        while line and line.strip() != "ready":  # d3rlpy logs to stdout before it is ready
            line = p.stdout.readline()
        if not line:
            raise SystemExit(f"worker for {name} exited before its window (exit code {p.wait()})")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    reports = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode != 0 for p in procs):
        raise SystemExit(f"a worker for {name} failed in its window")
    makespan = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    updates = sum(r["updates"] for r in reports)
    return {"aggregate_updates_per_s": round(updates / makespan, 2), "makespan_s": round(makespan, 2),
            "updates": updates, "check_max_abs_diff": max(r.get("check_max_abs_diff", 0.0) for r in reports)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="dataset dir (default: datasets/spaars/hopper-medium-v0)")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed window per configuration")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--algos", default=",".join(ALGOS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--batched", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    dataset_path = tt.resolve_dataset(args.dataset)
    if args.worker:
        worker(dataset_path, args.worker, args.threads, args.seconds, args.batched)
        return
    algos = args.algos.split(",")
    if "d3rlpy_iql" in algos and not tt.D3RLPY_PYTHON.exists():
        print(f"skipping d3rlpy_iql: {tt.D3RLPY_PYTHON} missing (BENCHMARKS.md says how to create it)", flush=True)
        algos.remove("d3rlpy_iql")
    configs = [(algo, label, procs, threads, 0) for algo in algos for label, (procs, threads) in PROCESS_CONFIGS.items()]
    if "iql" in algos:
        configs += [("iql", f"1 batched network of {SEEDS} seeds x 2 threads", 1, 2, SEEDS),
                    ("iql", f"1 batched network of {SEEDS} seeds x 1 thread", 1, 1, SEEDS)]
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": tt.machine_info(),
              "load_start": tt.load_average(), "dataset": str(dataset_path), "seconds": args.seconds,
              "rounds": args.rounds, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": []}
    runs: dict[tuple[str, str], list[dict]] = {(c[0], c[1]): [] for c in configs}
    for r in range(args.rounds):
        for algo, label, procs, threads, batched in configs:
            runs[(algo, label)].append(run_config(dataset_path, algo, procs, threads, args.seconds, batched))
        print(f"round {r + 1}/{args.rounds} done; load {tt.load_average()['loadavg']}", flush=True)
    print(f"\n{'update':<15}{'configuration':<42}{'aggregate upd/s':>16}{'x 1 proc 2 thr':>15}  rounds")
    for algo in dict.fromkeys(c[0] for c in configs):
        base = runs[(algo, "1 process x 2 threads")]
        for (a, label), rounds in runs.items():
            if a != algo:
                continue
            paired = [x["aggregate_updates_per_s"] / b["aggregate_updates_per_s"] for x, b in zip(rounds, base)]
            row = {"update": algo, "configuration": label,
                   "aggregate_updates_per_s": round(statistics.median(x["aggregate_updates_per_s"] for x in rounds), 2),
                   "x_one_process_two_threads_paired_median": round(statistics.median(paired), 3),
                   "rounds": rounds}
            report["results"].append(row)
            print(f"{algo:<15}{label:<42}{row['aggregate_updates_per_s']:>16.1f}"
                  f"{row['x_one_process_two_threads_paired_median']:>15.2f}  "
                  + " ".join(f"{x['aggregate_updates_per_s']:.0f}" for x in rounds))
    if "iql" in algos and "d3rlpy_iql" in algos:
        print(f"\n{'ours IQL / d3rlpy IQL, paired median per configuration':<57}  rounds")
        report["iql_vs_d3rlpy_paired_median"] = {}
        for label in PROCESS_CONFIGS:
            ratios = [o["aggregate_updates_per_s"] / d["aggregate_updates_per_s"]
                      for o, d in zip(runs[("iql", label)], runs[("d3rlpy_iql", label)])]
            report["iql_vs_d3rlpy_paired_median"][label] = round(statistics.median(ratios), 3)
            print(f"  {label:<55}{statistics.median(ratios):>5.2f}x  " + " ".join(f"{r:.2f}" for r in ratios))
    checks = [x["check_max_abs_diff"] for rows in runs.values() for x in rows]
    report["batched_loss_max_abs_diff_vs_alone"] = max(checks)
    report["load_end"] = tt.load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nbatched vs alone, max |loss diff| {max(checks):.2e}; load at end {report['load_end']['loadavg']}; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
