"""Why does the advantage gate open on ~100 % of steps after the switch? Evidence from finished runs.

    MUJOCO_GL=egl .venv/bin/python benchmarks/gate_diagnostics.py runs/hopper-spaars-short/seed0 runs/hopper-spaars-short/seed1

For each finished SPAARS run (its final checkpoint, its cached pretraining), on the states the run itself
visited (online replay: the latent phase, and the last 20k steps of the gated phase):
- the gate's statistic LCB = mean_i A_i - kappa * std_i A_i, A_i = Q_i(s, mu_raw(s)) - Q_i(s, a_lat(s)), in units of
  the running mean |Q| (the gate's scale), as quantiles, and the share of states where the gate would open at
  tau_rel = 0 (default), 0.01, 0.02, 0.05, 0.1 and with kappa = 1 (default), 2, 3;
- how far apart the two policies are there (mean squared action distance) and how often each ensemble member
  on its own prefers raw;
- what the critic's claim is worth: deterministic episodes with raw everywhere, latent everywhere and the gate,
  on diagnostic seeds (2,000,000 + i: neither training nor evaluation seeds), D4RL-normalised.
Nothing is trained or changed; the figures are read off the run as it ended. Results: stdout table and
benchmarks/results/gate_diagnostics.json.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spaars_robot.algos.gate import AdvantageGate, lcb_of, member_advantages  # noqa: E402
from spaars_robot.config.tasks import load_task  # noqa: E402
from spaars_robot.config.training import load_run_config  # noqa: E402
from spaars_robot.data.dataset import OfflineDataset  # noqa: E402
from spaars_robot.data.files import atomic_write_json, safe_torch_load  # noqa: E402
from spaars_robot.data.replay import ReplayBuffer  # noqa: E402
from spaars_robot.envs.evaluation import run_episodes  # noqa: E402
from spaars_robot.train.agents import build_agent  # noqa: E402

TAU_RELS = (0.0, 0.01, 0.02, 0.05, 0.1)
HYSTERESIS_Q = (0.0, 0.0001, 0.001, 0.01)  # in units of mean |Q| (0.01: the gate's original default)
HYSTERESIS_A = (0.0, 0.1, 0.25, 0.5, 1.0)  # in units of mean |A| over the same states
# candidate advantage-scaled gates (tau_rel, hysteresis_rel) in units of mean |A|, for open share and returns
ADVANTAGE_GATES = ((0.0, 0.25), (0.5, 0.25), (1.0, 0.5), (2.0, 1.0))
KAPPAS = (1.0, 2.0, 3.0)
DIAGNOSTIC_SEED_BASE = 2_000_000
GATED_TAIL = 20_000


def load_run(run_dir: Path, cache_dir: Path):
    config, facts = load_run_config(run_dir)
    dataset_path, bf16 = facts.dataset_path, facts.bf16
    if config.algo != "spaars":
        raise SystemExit(f"{run_dir}: algo {config.algo}; the gate exists only in spaars runs")
    task = load_task(config.task)
    agent = build_agent(config, task, OfflineDataset.load(dataset_path), cache_dir, bf16, None).agent
    state = safe_torch_load(run_dir / "checkpoint.pt")
    agent.load_state_dict(state["agent"])
    online = ReplayBuffer(max(config.online.env_steps, 1), task.obs_dim, task.action_dim)
    online.load_state_dict(state["online"])
    return config, task, agent, online, int(state["step"])


def latched_gate(lcb: torch.Tensor, done: torch.Tensor, tau: float, hysteresis: float,
                 episode_len: int = 1000) -> dict:
    """Replay the run's gate logic (AdvantageGate.decide, thresholds given in LCB units) along the stored
    trajectories: share of steps open and switches between the policies per 1000 steps. Reset at every
    termination and every `episode_len` steps (truncations are not stored, so episode starts are approximate)."""
    gate = AdvantageGate(tau_rel=tau, hysteresis_rel=hysteresis)  # scale 1: absolute thresholds
    opened, toggles, since_reset = 0, 0, 0
    for value, d in zip(lcb.tolist(), done.tolist()):
        was_open = gate.is_open
        toggles += gate.decide(value, 1.0) != was_open
        opened += gate.is_open
        since_reset += 1
        if d or since_reset >= episode_len:
            gate.reset()
            since_reset = 0
    n = max(len(lcb), 1)
    return {"open_share": opened / n, "switches_per_1000_steps": 1000 * toggles / n}


@torch.no_grad()
def gate_statistics(agent, obs: torch.Tensor, done: torch.Tensor) -> dict:
    nets, q_scale = agent.nets, float(agent.q_scale)
    # the controllers and critic the gate decides with (raw_init=spar: the rectified policy; gate.critic=held_out)
    raw, lat = agent.raw_policy.mean_action(obs), nets.decoded_latent_mean(obs)
    advantage = member_advantages(agent.gate_critic, obs, raw, lat)  # [E, B]
    out: dict = {"states": int(obs.shape[0]), "q_scale": q_scale,
                 "action_distance": float((raw - lat).pow(2).sum(-1).mean()),
                 "member_prefers_raw": [float((a > 0).float().mean()) for a in advantage],
                 "all_members_prefer_raw": float((advantage > 0).all(0).float().mean())}
    mean_abs_a = float(advantage.mean(0).abs().mean())
    lcb1 = lcb_of(advantage, 1.0)
    out["mean_abs_advantage_rel_q"] = mean_abs_a / q_scale
    out["latched_open_share_q_hysteresis"] = {f"{h:g}": latched_gate(lcb1, done, 0.0, h * q_scale)
                                              for h in HYSTERESIS_Q}
    out["latched_open_share_a_hysteresis"] = {f"{h:g}": latched_gate(lcb1, done, 0.0, h * mean_abs_a)
                                              for h in HYSTERESIS_A}
    out["advantage_gates"] = {f"tau{t:g}_h{h:g}": latched_gate(lcb1, done, t * mean_abs_a, h * mean_abs_a)
                              for t, h in ADVANTAGE_GATES}
    for kappa in KAPPAS:
        lcb = lcb_of(advantage, kappa) / q_scale
        out[f"kappa{kappa:g}"] = {
            "lcb_rel_quantiles": {q: float(torch.quantile(lcb, q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)},
            "open_share": {f"{t:g}": float((lcb > t).float().mean()) for t in TAU_RELS}}
    return out


def returns_by_controller(agent, task, episodes: int, mean_abs_a: float) -> dict:
    """Normalised returns of the deployable controllers at the end of the run, same diagnostic seeds: raw
    everywhere, latent everywhere, the run's own gate, and the candidate advantage-scaled gates (thresholds
    from `mean_abs_a`, the mean |A| on the run's last states)."""
    out = {}
    saved = agent.phase, agent.force_raw, agent.eval_gate
    q_scale = float(agent.q_scale)
    controllers = {"raw": ("gated", True, None), "latent": ("latent", False, None), "gated": ("gated", False, None)}
    for t, h in ADVANTAGE_GATES:  # expressed in q units so the agent's q-scaled gate applies them unchanged
        controllers[f"gated_tau{t:g}_h{h:g}_advantage"] = ("gated", False, AdvantageGate(
            t * mean_abs_a / q_scale, h * mean_abs_a / q_scale))
    for name, (phase, force_raw, gate) in controllers.items():
        agent.phase, agent.force_raw = phase, force_raw
        agent.eval_gate = gate or saved[2]
        returns, raw_rate = run_episodes(agent.act, task, episodes, DIAGNOSTIC_SEED_BASE,
                                         begin_episode=lambda: agent.begin_episode(evaluation=True))
        norm = [task.normalized_score(r) for r in returns]
        out[name] = {"normalized_mean": float(np.mean(norm)), "normalized_min": float(np.min(norm)),
                     "raw_rate": raw_rate}
    agent.phase, agent.force_raw, agent.eval_gate = saved
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/_pretrain_cache"))
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gate_diagnostics.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    for run_dir in args.run_dirs:
        config, task, agent, online, step = load_run(run_dir, args.cache_dir)
        switch = agent.switch_log[0]["step"] if agent.switch_log else None
        n = online.size
        latent_end = switch if switch is not None else n
        record = {"run": str(run_dir), "task": config.task, "seed": config.seed, "step": step, "switch_step": switch,
                  "latent_phase_states": gate_statistics(agent, online.obs[:latent_end], online.done[:latent_end])}
        if switch is not None and n > switch:
            record["gated_phase_tail_states"] = gate_statistics(
                agent, online.obs[max(switch, n - GATED_TAIL):n], online.done[max(switch, n - GATED_TAIL):n])
        last = record.get("gated_phase_tail_states", record["latent_phase_states"])
        record["returns"] = returns_by_controller(agent, task, args.episodes,
                                                  last["mean_abs_advantage_rel_q"] * last["q_scale"])
        results.append(record)
        print(f"\n{run_dir} (seed {config.seed}, step {step}, switch {switch})")
        for part in ("latent_phase_states", "gated_phase_tail_states"):
            if part not in record:
                continue
            st = record[part]
            print(f"  {part}: {st['states']} states, |raw - lat|^2 {st['action_distance']:.4f}, members prefer raw "
                  f"{', '.join(f'{m:.2f}' for m in st['member_prefers_raw'])}, all {st['all_members_prefer_raw']:.2f}")
            for kappa in KAPPAS:
                k = st[f"kappa{kappa:g}"]
                qs = " ".join(f"{v:+.4f}" for v in k["lcb_rel_quantiles"].values())
                opens = " ".join(f"{t}:{v:.2f}" for t, v in k["open_share"].items())
                print(f"    kappa {kappa:g}: LCB/|Q| q05..q95 {qs} | open share by tau_rel {opens}")
            print(f"    mean |A| / mean |Q| {st['mean_abs_advantage_rel_q']:.5f}; along the stored trajectories "
                  f"(kappa 1, tau 0) the latched gate is open on (share/switches per 1000 steps): " + " ".join(
                      f"h={h}|Q|:{v['open_share']:.2f}/{v['switches_per_1000_steps']:.0f}" for h, v in st["latched_open_share_q_hysteresis"].items()) + " / " + " ".join(
                      f"h={h}|A|:{v['open_share']:.2f}/{v['switches_per_1000_steps']:.0f}" for h, v in st["latched_open_share_a_hysteresis"].items()))
            print("    advantage-scaled gates (tau, h in mean |A|), open share/switches per 1000 steps: " + " ".join(
                f"{name}:{v['open_share']:.2f}/{v['switches_per_1000_steps']:.0f}"
                for name, v in st["advantage_gates"].items()))
        print("  returns (normalised, diagnostic seeds): " + ", ".join(
            f"{name} {r['normalized_mean']:.1f} (min {r['normalized_min']:.1f}, raw {r['raw_rate']:.2f})"
            for name, r in record["returns"].items()))
    atomic_write_json(args.out, {"command": " ".join(sys.argv), "episodes": args.episodes,
                                 "diagnostic_seed_base": DIAGNOSTIC_SEED_BASE, "runs": results})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
