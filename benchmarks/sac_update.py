"""SAC update rate and data-collection env steps/s, each beside a baseline measured in the same run.

    .venv/bin/python benchmarks/sac_update.py [--seconds 8] [--threads 2] \
        [--out benchmarks/results/sac_update.json]

Why these pairs:
- SAC update (batch 256, 256x256 MLPs, Hopper dims): our fused Adam vs PyTorch's default Adam (the
  for-loop implementation on CPU), i.e. what `algos.base.fused_adam` buys.
- Collection: our `rollout` (uniform-random and SAC-policy, with episode bookkeeping and shard
  writes) vs bare `env.step` with random actions, i.e. the simulator's own ceiling.
- SAC online (one env step + one update, the behaviour-policy phase of `data collect`) with fused vs
  default Adam; this is the rate that bounds how long a medium dataset takes.
Machine load (`uptime`) is recorded before and after, since other jobs on the machine skew every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch

from spaars_robot.algos.sac import SAC, SACConfig
from spaars_robot.config.tasks import load_task
from spaars_robot.data.replay import ReplayBuffer
from spaars_robot.envs import make_env
from spaars_robot.train.collect import BehaviourRun, CollectConfig, rollout


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def use_default_adam(sac: SAC) -> None:
    """Replace the fused optimisers by torch's default Adam (same lr): the baseline."""
    lr = sac.config.lr
    sac.actor_opt = torch.optim.Adam(sac.actor.parameters(), lr=lr)
    sac.critic_opt = torch.optim.Adam(sac.critic.parameters(), lr=lr)
    sac.alpha_opt = torch.optim.Adam([sac.log_alpha], lr=lr)


def timed(step: Callable[[], int], seconds: float, warmup: int) -> float:
    """Calls `step` (which returns how many units it did) for `seconds` after `warmup` calls; units/s."""
    for _ in range(warmup):
        step()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += step()
    return done / (time.perf_counter() - start)


def sac_updates_per_s(obs_dim: int, act_dim: int, fused: bool, seconds: float) -> float:
    sac = SAC(obs_dim, act_dim, SACConfig(), seed=0)
    if not fused:
        use_default_adam(sac)
    buffer = ReplayBuffer(100_000, obs_dim, act_dim)
    gen = torch.Generator().manual_seed(0)
    buffer.obs.normal_(generator=gen)
    buffer.next_obs.normal_(generator=gen)
    buffer.action.uniform_(-1, 1, generator=gen)
    buffer.reward.normal_(generator=gen)
    buffer.size = buffer.cursor = 100_000

    def step() -> int:
        sac.update(buffer.sample(256, sac.generator))
        return 1

    return timed(step, seconds, warmup=20)


def bare_env_steps_per_s(task, seconds: float) -> float:
    env = make_env(task)
    rng = np.random.default_rng(0)
    env.reset(seed=0)

    def step() -> int:
        for _ in range(1000):
            _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, task.action_dim).astype(np.float32))
            if terminated or truncated:
                env.reset()
        return 1000

    return timed(step, seconds, warmup=1)


def rollout_steps_per_s(task, policy: torch.nn.Module | None, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        rollout(task, policy, steps, seed=0, shard_dir=Path(tmp), shard_steps=10_000, progress=None)
        return steps / (time.perf_counter() - start)


def sac_online_steps_per_s(task, fused: bool, steps: int) -> float:
    """The behaviour-policy phase of `data collect`: env step + replay add + one SAC update per step."""
    config = CollectConfig(
        steps=1, train_budget=steps + 1000, random_steps=1000, eval_every=10**9, checkpoint_every=10**9
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = BehaviourRun(Path(tmp), task, config, progress=None)
        if not fused:
            use_default_adam(run.sac)
        run.config = config.model_copy(update={"train_budget": 1000})
        run.train_until("expert")  # uniform-action warm-up, not timed
        run.config = config
        start = time.perf_counter()
        run.train_until("expert")
        return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="timing window per update measurement")
    parser.add_argument("--rollout-steps", type=int, default=20_000)
    parser.add_argument("--online-steps", type=int, default=1_500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sac_update.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = load_task("hopper")
    load_before = load_average()
    results: dict[str, dict[str, float]] = {}

    def record(
        name: str, ours: float, baseline: float, ours_label: str, baseline_label: str, unit: str
    ) -> None:
        results[name] = {
            ours_label: round(ours, 1),
            baseline_label: round(baseline, 1),
            "ratio": round(ours / baseline, 3),
            "unit": unit,
        }
        print(
            f"{name:<28} {ours_label} {ours:9.1f} {unit}   {baseline_label} {baseline:9.1f} {unit}   "
            f"x{ours / baseline:.2f}",
            flush=True,
        )

    record(
        "sac_update",
        sac_updates_per_s(task.obs_dim, task.action_dim, True, args.seconds),
        sac_updates_per_s(task.obs_dim, task.action_dim, False, args.seconds),
        "fused_adam",
        "default_adam",
        "updates/s",
    )
    bare = bare_env_steps_per_s(task, args.seconds)
    record(
        "collect_random_rollout",
        rollout_steps_per_s(task, None, args.rollout_steps),
        bare,
        "rollout",
        "bare_env_step",
        "steps/s",
    )
    actor = SAC(task.obs_dim, task.action_dim, SACConfig(), seed=0).actor
    record(
        "collect_policy_rollout",
        rollout_steps_per_s(task, actor, args.rollout_steps),
        bare,
        "rollout",
        "bare_env_step",
        "steps/s",
    )
    record(
        "sac_online",
        sac_online_steps_per_s(task, True, args.online_steps),
        sac_online_steps_per_s(task, False, args.online_steps),
        "fused_adam",
        "default_adam",
        "steps/s",
    )

    report = {
        "command": "python benchmarks/sac_update.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "task": task.env_id,
        "batch_size": 256,
        "hidden": [256, 256],
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": args.threads,
            "python": platform.python_version(),
        },
        "load_average_1_5_15": {"before": load_before, "after": load_average()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"wrote {args.out}; load average before {load_before}, after {report['load_average_1_5_15']['after']}"
    )


if __name__ == "__main__":
    main()
