"""Does SPAR stay on the data manifold where a value-gradient actor leaves it? (issue 19)

From one finished `spar` run (the `offline` protocol is enough), on the same frozen IQL critic and the same dataset:
  - SPAR's rectified policy (Latent Self-Imitation: a weighted regression onto decoded candidates),
  - its frozen BC anchor alone,
  - a TD3+BC actor trained here for as many updates as SPAR's LSI stage, on the same critic, from the same anchor
    initialisation (the value-gradient form: maximise lambda Q(s, pi(s)) - ||pi(s) - a||^2, lambda = 2.5 / mean |Q|),
  - the dataset's own actions (the reference: 1 - support_quantile of them are out of support by construction).
For each, on held dataset states: the dataset CVAE's support score distribution (quantiles), the share above the
run's calibrated threshold (out of support), the critic's mean Q, and the normalised score over evaluation episodes
(episode seeds 100.., not training-evaluation seeds). Same process, same states, side by side.

    MUJOCO_GL=egl .venv/bin/python benchmarks/spar_manifold.py runs/hopper-spar-offline/seed0 \
        --out benchmarks/results/spar_manifold_hopper_seed0.json
    .venv/bin/python benchmarks/spar_manifold.py --summarize benchmarks/results/spar_manifold_hopper_seed*.json
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from spaars_robot.config.tasks import load_task
from spaars_robot.config.training import load_run_config
from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.data.files import atomic_write_json, safe_torch_load
from spaars_robot.envs.evaluation import run_episodes
from spaars_robot.train.agents import build_agent
from spaars_robot.train.spar_offline import td3bc_offline

EVAL_SEED_BASE = 100
QUANTILES = (0.5, 0.9, 0.99)


@torch.no_grad()
def describe(name: str, act_fn, nets, obs_n: torch.Tensor, task, episodes: int) -> dict:
    actions = act_fn(obs_n)
    scores = nets.cvae.support_score(obs_n, actions)
    q = nets.critic(obs_n, actions).mean(0)
    out = {"name": name, "support_quantiles": {str(k): float(torch.quantile(scores, k)) for k in QUANTILES},
           "out_of_support_rate": float((scores > nets.support_threshold).float().mean()),
           "mean_q": float(q.mean())}
    if episodes:
        def act(obs):
            s = nets.normalizer(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))
            return act_fn(s)[0].numpy(), "raw"
        returns, _ = run_episodes(act, task, episodes, EVAL_SEED_BASE)
        norm = [task.normalized_score(r) for r in returns]
        out["normalized_mean"], out["normalized_ci95"] = float(np.mean(norm)), float(
            1.96 * np.std(norm, ddof=1) / np.sqrt(len(norm)) if len(norm) > 1 else 0.0)
    return out


def summarize(paths: list[Path]) -> None:
    """Several seeds' JSON side by side: per policy, mean and 95 % t-interval of each column over the seeds."""
    from spaars_robot.train.summaries import mean_ci95

    results = [json.loads(p.read_text()) for p in paths]
    seeds = ", ".join(str(r["seed"]) for r in results)
    tasks = sorted({r["task"] for r in results})
    if len(tasks) > 1:
        raise SystemExit(f"the files are of several tasks ({', '.join(tasks)}): summarize one task at a time")
    print(f"| policy ({tasks[0]} seeds {seeds}) | support p50 | p90 | p99 | out-of-support | mean Q | normalised score |")
    print("|---|---|---|---|---|---|---|")
    for index, row in enumerate(results[0]["rows"]):
        rows = [r["rows"][index] for r in results]
        assert all(r["name"] == row["name"] for r in rows), "the files list different policies"

        def cell(values: list[float], digits: int, scale: float = 1.0) -> str:
            mean, half = mean_ci95([scale * v for v in values])
            return f"{mean:.{digits}f}" if half != half else f"{mean:.{digits}f} ± {half:.{digits}f}"

        quantiles = [cell([r["support_quantiles"][q] for r in rows], 4) for q in ("0.5", "0.9", "0.99")]
        score = cell([r["normalized_mean"] for r in rows], 1) if "normalized_mean" in row else "-"
        print(f"| {row['name']} | {' | '.join(quantiles)} | {cell([r['out_of_support_rate'] for r in rows], 2, 100)} % "
              f"| {cell([r['mean_q'] for r in rows], 2)} | {score} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, nargs="?")
    parser.add_argument("--summarize", type=Path, nargs="+", help="print these result JSONs as one Markdown table")
    parser.add_argument("--states", type=int, default=20_000, help="dataset states scored (strided over the dataset)")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--td3bc-steps", type=int, default=None, help="default: the run's spar.lsi_steps")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("SPAARS_CACHE", "runs/.cache")))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return
    if args.run_dir is None or args.out is None:
        parser.error("RUN_DIR and --out are required (or --summarize JSON...)")
    torch.set_num_threads(1)
    config, facts = load_run_config(args.run_dir)
    if config.algo != "spar":
        raise SystemExit(f"{args.run_dir}: a spar run is needed (this one is {config.algo})")
    task = load_task(config.task)
    built = build_agent(config, task, OfflineDataset.load(facts.dataset_path), args.cache, facts.bf16, None)
    state = safe_torch_load(args.run_dir / "checkpoint.pt")["agent"]
    built.agent.load_state_dict(state)
    nets, spar = built.nets, built.agent.policy
    buffer = built.offline
    stride = max(buffer.size // args.states, 1)
    obs_n, data_actions = buffer.obs[::stride][: args.states], buffer.action[::stride][: args.states]
    steps = args.td3bc_steps if args.td3bc_steps is not None else config.spar.lsi_steps
    t0 = time.perf_counter()
    # the td3bc algorithm's offline stage (train/spar_offline.py), on this script's own stream (seed, as committed)
    td3bc, _ = td3bc_offline(spar, nets.critic, buffer, steps, config.spar.batch_size, config.spar.lr,
                             config.online.alpha_bc, torch.Generator().manual_seed(config.seed))
    td3bc_seconds = time.perf_counter() - t0
    anchor_only = spar.base_action
    rows = [
        describe("dataset actions", lambda s: data_actions, nets, obs_n, task, 0),
        describe("BC anchor", anchor_only, nets, obs_n, task, args.episodes),
        describe("SPAR (anchor + LSI residual)", spar.mean_action, nets, obs_n, task, args.episodes),
        describe("TD3+BC (value gradient, same critic)", td3bc.base_action, nets, obs_n, task, args.episodes),
    ]
    result = {"run_dir": str(args.run_dir), "task": task.name, "seed": config.seed, "states": int(obs_n.shape[0]),
              "support_threshold": float(nets.support_threshold), "td3bc_steps": steps,
              "td3bc_seconds": td3bc_seconds, "episodes": args.episodes, "episode_seed_base": EVAL_SEED_BASE,
              "rows": rows, "load": os.getloadavg()}
    for row in rows:
        q = row["support_quantiles"]
        score = f"{row['normalized_mean']:.1f} ± {row['normalized_ci95']:.1f}" if "normalized_mean" in row else "-"
        print(f"{row['name']:40s} support p50 {q['0.5']:.4f} p90 {q['0.9']:.4f} p99 {q['0.99']:.4f}  "
              f"out-of-support {100 * row['out_of_support_rate']:.1f}%  mean Q {row['mean_q']:.1f}  score {score}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(json.dumps({"out": str(args.out)}))


if __name__ == "__main__":
    main()
