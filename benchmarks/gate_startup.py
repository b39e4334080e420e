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
from spaars_robot.envs.evaluation import run_episodes
from spaars_robot.train.branching import load_gated_agent
from spaars_robot.train.safety_in_loop import env_factory


class Scheduled:
    """The agent's `act` for `run_episodes` (the loop behind every reported score): the critic gate when `head` is
    None, else the latent action for the episode's first `head` steps and raw after; it keeps where latent ran."""

    def __init__(self, agent, head: int | None) -> None:
        self.agent, self.head = agent, head
        self.latent_steps: list[list[int]] = []
        self.lengths: list[int] = []

    def begin_episode(self) -> None:
        self.agent.begin_episode(evaluation=True)
        self.agent.phase, self.agent.force_raw = "gated", False
        self.latent_steps.append([])
        self.lengths.append(0)

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, str]:
        t = self.lengths[-1]
        if self.head is not None:
            self.agent.phase, self.agent.force_raw = ("latent", False) if t < self.head else ("gated", True)
        action, source = self.agent.act(obs)
        if source != "raw":
            self.latent_steps[-1].append(t)
        self.lengths[-1] = t + 1
        return action, source


def play(agent, task, make, episodes: int, seed_base: int, head: int | None) -> tuple[list[float], Scheduled]:
    """Normalised scores of `episodes` evaluation episodes under the schedule, and the schedule's per-step record."""
    schedule = Scheduled(agent, head)
    returns, _ = run_episodes(schedule, task, episodes, seed_base, begin_episode=schedule.begin_episode, make=make)
    return [task.normalized_score(r) for r in returns], schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished run directory (runs/<name>/seed<N>)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--heads", default="0,8,20", help="latent steps at each episode's start, comma-separated")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    config, task, agent, _, _ = load_gated_agent(args.run)
    make = env_factory(config, task)  # the run's safety layer, as its evaluations had it
    with torch.no_grad():
        scores, gate = play(agent, task, make, args.episodes, config.eval.seed_base, None)
        result: dict = {
            "run": str(args.run), "task": task.name, "seed": config.seed, "episodes": args.episodes,
            "eval_seed_base": config.eval.seed_base,
            "critic_gate": {"normalized_mean": float(np.mean(scores)), "normalized_std": float(np.std(scores)),
                            "normalized": scores, "latent_steps": gate.latent_steps, "lengths": gate.lengths,
                            "latent_share": sum(map(len, gate.latent_steps)) / sum(gate.lengths),
                            "latent_before_step_20_share": float(np.mean([sum(t < 20 for t in steps) / len(steps)
                                                                          if steps else 0.0
                                                                          for steps in gate.latent_steps]))},
            "schedules": {}}
        print(f"critic gate: {result['critic_gate']['normalized_mean']:.1f} ± {np.std(scores):.1f}, latent on "
              f"{result['critic_gate']['latent_share']:.1%} of steps; first episodes' latent steps: "
              + "; ".join(str(steps[:10]) for steps in gate.latent_steps[:3]))
        for head in (int(h) for h in args.heads.split(",")):
            played, _ = play(agent, task, make, args.episodes, config.eval.seed_base, head)
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
