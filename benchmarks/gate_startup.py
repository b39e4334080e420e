"""Where does a run's critic gate execute the latent action, and what is that worth? (issue 16)

Found 2026-12-05 on hopper seed 0 (default SPAARS, AMD dataset): the critic gate executed raw on 99 % of evaluation
steps and scored 90.2 over 20 evaluation episodes, where always-raw scored 53.1 -- the remaining 1 % carried
37 points. This measures it on any finished spaars / latent / raw run, on the run's own evaluation seeds:

1. the critic gate as deployed: per episode, its normalised score and the steps at which it executed the latent
   action (the latch starts each episode closed, so a gate whose LCB needs a few steps to clear its threshold
   hands the episode's first steps to the latent policy);
2. start-up schedules: the latent action for the first N steps of each episode, then raw on every step
   (`--heads 0,8,20`; N = 0 is always-raw), with no gate at all.

If a schedule with no state dependence matches the critic gate, what the gate contributes is *when* in the episode
it opens, not a ranking of states.

    MUJOCO_GL=egl .venv/bin/python benchmarks/gate_startup.py runs/hopper-spaars-short/seed0 \\
        --episodes 20 --heads 0,8,20 --out benchmarks/results/gate_startup_hopper_seed0.json

Cost: (1 + number of heads) x episodes evaluation episodes, about a minute on hopper.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from spaars_robot.data.files import atomic_write_json
from spaars_robot.envs import make_env
from spaars_robot.train.branching import applied, load_gated_agent


def play(agent, task, layer, seed: int, head: int | None) -> tuple[float, list[int], int]:
    """One evaluation episode: the critic gate (head None) or latent for `head` steps then raw.
    Returns (normalised score, steps where the latent action was executed, episode length). The run's safety layer,
    if it has one, is applied as in train/branching.py (the env itself is bare)."""
    env = make_env(task)
    obs, _ = env.reset(seed=seed)
    safety = None if layer is None else layer.new_state()
    agent.begin_episode(evaluation=True)
    agent.phase, agent.force_raw = "gated", False
    total, t, latent_steps, done = 0.0, 0, [], False
    while not done:
        if head is not None:
            agent.phase, agent.force_raw = ("latent", False) if t < head else ("gated", True)
        action, source = agent.act(obs)
        if source != "raw":
            latent_steps.append(t)
        obs, reward, terminated, truncated, _ = env.step(applied(layer, safety, action, obs))
        total, t, done = total + float(reward), t + 1, terminated or truncated
    env.close()
    return task.normalized_score(total), latent_steps, t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished run directory (runs/<name>/seed<N>)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--heads", default="0,8,20", help="latent steps at each episode's start, comma-separated")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    config, task, agent, _, layer = load_gated_agent(args.run)
    seeds = [config.eval.seed_base + i for i in range(args.episodes)]
    with torch.no_grad():
        gate = [play(agent, task, layer, seed, None) for seed in seeds]
        scores = [g[0] for g in gate]
        result: dict = {
            "run": str(args.run), "task": task.name, "seed": config.seed, "episodes": args.episodes,
            "eval_seed_base": config.eval.seed_base,
            "critic_gate": {"normalized_mean": float(np.mean(scores)), "normalized_std": float(np.std(scores)),
                            "normalized": scores,
                            "latent_steps": [g[1] for g in gate], "lengths": [g[2] for g in gate],
                            "latent_share": sum(len(g[1]) for g in gate) / sum(g[2] for g in gate),
                            "latent_before_step_20_share": float(np.mean([sum(s < 20 for s in g[1]) / len(g[1])
                                                                          if g[1] else 0.0 for g in gate]))},
            "schedules": {}}
        print(f"critic gate: {result['critic_gate']['normalized_mean']:.1f} ± {np.std(scores):.1f}, latent on "
              f"{result['critic_gate']['latent_share']:.1%} of steps; first episodes' latent steps: "
              + "; ".join(str(g[1][:10]) for g in gate[:3]))
        for head in (int(h) for h in args.heads.split(",")):
            played = [play(agent, task, layer, seed, head)[0] for seed in seeds]
            diff = np.asarray(played) - np.asarray(scores)
            result["schedules"][str(head)] = {"normalized_mean": float(np.mean(played)),
                                              "normalized_std": float(np.std(played)), "normalized": played,
                                              "minus_critic_gate_mean": float(diff.mean())}
            print(f"latent for the first {head} steps, then raw: {np.mean(played):.1f} ± {np.std(played):.1f} "
                  f"(minus the critic gate, paired: {diff.mean():+.1f})")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if args.out:
        atomic_write_json(args.out, result)
        print(f"wrote {args.out}")
    else:
        print(json.dumps({k: v for k, v in result.items() if k != "critic_gate"}, indent=1)[:2000])


if __name__ == "__main__":
    main()
