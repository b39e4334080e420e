"""How the scripted Ant's gait constants were found, and how well the shipped walker reaches goals (issue 18).

    MUJOCO_GL=egl .venv/bin/python benchmarks/ant_gait_search.py --out benchmarks/results/ant_gait.json

1. Trot search: `--draws` random GaitPatterns (trot phases; timing, amplitudes, lag, gains and per-leg signs drawn
   uniformly), each run open-loop for 10 s on AntMaze's Ant from a fixed reset; scored by the distance walked
   along the torso's initial heading minus sideways drift, 3x the heading change and a fall penalty.
2. Turn search: all 256 (hip, ankle) sign patterns at the best trot's timing; scored by |heading change| minus
   half the distance travelled: turning on the spot.
3. The shipped walker (train/scripted_ant.py, whose constants are the result of 1-2 at the default seed),
   closed loop: goals reached per 25 s episode in the open `ant-goal` arena, and the share of random maze
   episodes (start and goal cells as antmaze-*-diverse draws them, 1000 steps) that reach the goal, with and
   without the data's action noise. The search reproduces the shipped constants only up to the rounding they
   were written down with; step 3 always scores what ships.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from itertools import product
from pathlib import Path

import numpy as np
import torch

from spaars_robot.config.tasks import load_task
from spaars_robot.data.files import atomic_write_json
from spaars_robot.envs import make_env
from spaars_robot.train.maze_waypoints import MazeWaypointBehaviour
from spaars_robot.train.scripted_ant import GAITS, TROT, GaitPattern, ScriptedAntWalker


def open_loop(env, pattern: GaitPattern, steps: int = 200, seed: int = 0) -> dict:
    """Walked distance along / across the initial heading, heading change (rad), and whether it fell."""
    obs, _ = env.reset(seed=seed)
    ant = env.unwrapped.inner.unwrapped.ant_env

    def yaw() -> float:
        w, x, y, z = ant.data.qpos[3:7]
        return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))

    start, heading0 = ant.data.qpos[:2].copy(), yaw()
    turned, previous, fell = 0.0, heading0, False
    for t in range(steps):
        obs, _, terminated, _, _ = env.step(pattern.action(obs[:27], t * env.unwrapped.dt))
        now = yaw()
        turned += (now - previous + np.pi) % (2 * np.pi) - np.pi
        previous = now
        if terminated:
            fell = True
            break
    moved = ant.data.qpos[:2] - start
    ahead = np.array([np.cos(heading0), np.sin(heading0)])
    return {"along": float(moved @ ahead), "across": float(ahead[0] * moved[1] - ahead[1] * moved[0]),
            "turned": turned, "fell": fell}


def search_trot(env, draws: int, rng: np.random.Generator) -> tuple[GaitPattern, dict]:
    best = None
    for _ in range(draws):
        omega, hip = rng.uniform(4, 14), rng.uniform(0.15, 0.5)  # this draw order reproduces the shipped TROT
        hip_signs, ankle = tuple(rng.choice([-1.0, 1.0], 4)), rng.uniform(0.05, 0.35)
        ankle_signs, lag, kp, kd = tuple(rng.choice([-1.0, 1.0], 4)), rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 4), \
            rng.uniform(0, 0.2)
        pattern = GaitPattern(omega=omega, hip_amplitude=hip, ankle_amplitude=ankle, ankle_lag=lag, kp=kp, kd=kd,
                              hip_signs=hip_signs, ankle_signs=ankle_signs)
        r = open_loop(env, pattern)
        score = r["along"] - abs(r["across"]) - 3 * abs(r["turned"]) - 10 * r["fell"]
        if best is None or score > best[0]:
            best = (score, pattern, r)
    return best[1], best[2] | {"score": best[0]}


def search_turns(env, trot: GaitPattern) -> dict:
    best: dict[str, tuple] = {}
    for hips, ankles in product(product([-1.0, 1.0], repeat=4), repeat=2):
        pattern = replace(trot, hip_signs=hips, ankle_signs=ankles)
        r = open_loop(env, pattern)
        score = abs(r["turned"]) - 0.5 * float(np.hypot(r["along"], r["across"])) - 5 * r["fell"]
        side = "left" if r["turned"] > 0 else "right"
        if side not in best or score > best[side][0]:
            best[side] = (score, pattern, r)
    return {side: {"hip_signs": p.hip_signs, "ankle_signs": p.ankle_signs, **r, "score": s}
            for side, (s, p, r) in best.items()}


def arena_goals(episodes: int) -> list[int]:
    env = make_env(load_task("ant-goal"))
    reached = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=100 + episode)
        walker, generator = ScriptedAntWalker(), torch.Generator().manual_seed(episode)
        walker.begin_episode(generator)
        info: dict = {"goals_reached": 0}
        for _ in range(500):
            obs, _, terminated, _, info = env.step(walker.act(obs[:27], obs[27:], generator))
            if terminated:
                break
        reached.append(int(info["goals_reached"]))
    env.close()
    return reached


def maze_success(episodes: int, noise: float) -> dict:
    task = load_task("antmaze-medium")
    env = make_env(task)
    walker = ScriptedAntWalker(action_noise=noise)
    behaviour = MazeWaypointBehaviour(task, walker)
    successes, falls, lengths = 0, 0, []
    for episode in range(episodes):
        generator = torch.Generator().manual_seed(episode)
        obs, _ = env.reset(seed=episode, options=behaviour.reset_options(generator))
        behaviour.begin_episode(generator)
        for t in range(1000):
            obs, reward, terminated, truncated, _ = env.step(behaviour.act(obs, generator))
            if terminated or truncated:
                break
        successes += int(reward > 0)
        falls += int(obs[2] < 0.2 or obs[2] > 1.0)
        lengths.append(t + 1)
    env.close()
    return {"episodes": episodes, "success_rate": successes / episodes, "falls": falls,
            "mean_length": float(np.mean(lengths))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--maze-episodes", type=int, default=50)
    parser.add_argument("--arena-episodes", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    t0 = time.perf_counter()
    env = make_env(load_task("ant-goal"))
    trot, trot_result = search_trot(env, args.draws, np.random.default_rng(args.seed))
    turns = search_turns(env, trot)
    shipped = {name: open_loop(env, pattern) for name, pattern in GAITS.items()}
    env.close()
    result = {
        "search": {"draws": args.draws, "seed": args.seed, "trot": {**vars(trot), **trot_result}, "turns": turns},
        "shipped_trot": vars(TROT), "shipped_open_loop_10s": shipped,
        "arena_goals_per_25s_episode": arena_goals(args.arena_episodes),
        "maze": {"noise_0.05 (the data's)": maze_success(args.maze_episodes, 0.05),
                 "noise_0": maze_success(args.maze_episodes, 0.0)},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result, indent=2, default=float))
    if args.out:
        atomic_write_json(args.out, json.loads(json.dumps(result, default=float)))


if __name__ == "__main__":
    main()
