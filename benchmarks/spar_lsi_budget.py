"""How many Latent Self-Imitation updates does SPAR need? (issue 19; tuning on training seeds only)

LSI is SPAR's costly stage: every update decodes `candidates` CVAE actions per state and scores each on the critic
ensemble (16 x 256 decodes and 2 x 4096 critic passes per update, ~10x a behaviour-cloning update). Its 50k-update
first default cost ~45 min per seed on one loaded core, more than the pretraining it follows. This script continues
one training seed's SPAR stages from the end of residual regression (the stages' partial checkpoint at
anchor_steps + residual_steps, written by `train --algo spar`) and evaluates the rectified policy every `--every`
LSI updates on tuning episodes (seeds 100.., never the reported evaluation seeds 1,000,000..), printing the score
and LSI's own signals (Q gain of the weighted target over the current action, |residual|), and writing JSON.

    MUJOCO_GL=egl .venv/bin/python benchmarks/spar_lsi_budget.py --dataset hopper-medium --seed 0 \
        --steps 20000 --every 2500 --out benchmarks/results/spar_lsi_budget_hopper-medium_seed0.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from spaars_robot.algos.base import fused_adam
from spaars_robot.algos.spar import lsi_loss, make_rectified
from spaars_robot.config.tasks import load_task
from spaars_robot.config.training import resolve_config
from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.data.files import atomic_write_json, safe_torch_load
from spaars_robot.data.locate import resolve_dataset
from spaars_robot.envs.evaluation import run_episodes
from spaars_robot.nn.device import make_generator, set_generator_state
from spaars_robot.train.agents import build_agent
from spaars_robot.train.spar_offline import spar_cache_key

TUNING_SEED_BASE = 100  # tuning episodes; the reported evaluation uses eval.seed_base (1,000,000..)


def score(policy, nets, task, episodes: int) -> float:
    @torch.no_grad()
    def act(obs):
        s = nets.normalizer(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))
        return policy.mean_action(s)[0].numpy(), "raw"

    returns, _ = run_episodes(act, task, episodes, TUNING_SEED_BASE)
    return float(np.mean([task.normalized_score(r) for r in returns]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="hopper")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--seed", type=int, required=True, choices=(0, 1), help="training seeds only")
    parser.add_argument("--protocol", default="offline")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--every", type=int, default=2_500)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--cache", type=Path, default=Path("runs/_pretrain_cache"))
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="spar.* override, e.g. spar.lsi_decode_bf16=true (repeatable)")
    parser.add_argument("--partial", type=Path, default=None,
                        help="the stages' partial checkpoint at the end of residual regression [default: the cache "
                             "entry of this config]; stages (i) do not depend on the spar.lsi_* fields, so the "
                             "partial of a run with another lsi budget is the same start")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = resolve_dataset(args.dataset)
    config = resolve_config(args.protocol, {"task": args.task, "dataset": args.dataset, "algo": "iql",
                                            "seed": args.seed}, args.sets)
    task = load_task(args.task)
    built = build_agent(config, task, OfflineDataset.load(path), args.cache, False, None)  # the cached pretraining
    nets, buffer, cfg = built.nets, built.offline, config.spar
    key = spar_cache_key(Path(built.pretrain_info["cache"]).stem, args.seed, cfg)
    partial = args.partial or args.cache / f"{key}.partial.pt"
    state = safe_torch_load(partial)
    start = int(state["step"])
    if start != cfg.anchor_steps + cfg.residual_steps:
        raise SystemExit(f"{partial}: at step {start}; this needs the end of residual regression "
                         f"({cfg.anchor_steps + cfg.residual_steps})")
    policy = make_rectified(buffer.obs.shape[1], buffer.action.shape[1], nets.latent_dim, cfg)
    policy.load_state_dict(state["policy"])
    policy.freeze_anchor()
    opt = fused_adam(policy.residual_parameters(), cfg.lr)
    opt.load_state_dict(state["residual_opt"])
    generator = make_generator(args.seed + 4242, "cpu")
    set_generator_state(generator, state["generator"])
    rows = [{"lsi_steps": 0, "normalized": score(policy, nets, task, args.episodes), "seconds": 0.0}]
    print(json.dumps(rows[-1]), flush=True)
    t0, window = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        loss, metrics = lsi_loss(policy, nets.cvae, nets.critic, buffer.sample(cfg.batch_size, generator)["obs"],
                                 cfg, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=policy.residual_parameters())
        opt.step()
        window.append({k: float(v) for k, v in metrics.items()})
        if step % args.every == 0:
            seconds = time.perf_counter() - t0
            rows.append({"lsi_steps": step, "normalized": score(policy, nets, task, args.episodes),
                         "seconds": seconds, "updates_per_second": step / seconds,
                         **{k: float(np.mean([w[k] for w in window])) for k in window[0]}})
            window = []
            print(json.dumps(rows[-1]), flush=True)
    atomic_write_json(args.out, {
        "command": "benchmarks/spar_lsi_budget.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "machine": f"{platform.processor() or platform.machine()}, torch threads 1", "task": args.task,
        "dataset": args.dataset, "seed": args.seed, "spar": cfg.model_dump(mode="json"),
        "tuning_episode_seed_base": TUNING_SEED_BASE, "episodes": args.episodes, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
