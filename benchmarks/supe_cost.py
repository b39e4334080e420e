"""What SUPE's updates cost on this CPU, side by side with the shared pretraining update (issue 18, "measure the
update cost and report it"), so a `short` protocol can be sized from measured ratios rather than guesses.

    .venv/bin/python benchmarks/supe_cost.py                      # antmaze sizes (obs 31, action 8)
    .venv/bin/python benchmarks/supe_cost.py --obs 71 --action 9  # kitchen sizes

Cases, each one full update on random data of the task's sizes (batch 256, one torch thread), in `--rounds`
interleaved rounds (the machine is shared: only ratios taken side by side mean something), the median kept:
  baseline     the shared pretraining update (CVAE + IQL critic ensemble, V, AWR; `offline_losses`), fp32;
  skills-*     the skill VAE update with SUPE's encoder (BiGRU 256 x 2) and smaller ones, fp32 and bf16 autocast;
  high-level   SUPE's high-level update (10-member LayerNorm critics, actor, temperature, RND, reward model), at
               SUPE's 256x3 and at the supe-short protocol's 256x2.
Prints a table and writes benchmarks/results/supe_cost.json.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from spaars_robot.algos.base import fused_adam
from spaars_robot.algos.offline import OfflineNets, offline_losses
from spaars_robot.algos.supe import SUPEAgent
from spaars_robot.config.training import PretrainConfig, resolve_config
from spaars_robot.nn.skills import SkillVAE

RESULTS = Path(__file__).resolve().parent / "results" / "supe_cost.json"
BATCH, H = 256, 4
SKILL_SIZES = {"skills-supe (gru 256x2)": (256, 2), "skills-gru128x1": (128, 1), "skills-gru64x1": (64, 1)}


def _baseline(obs: int, act: int) -> Callable[[], None]:
    cfg = PretrainConfig()
    nets = OfflineNets(obs, act, cfg)
    target = copy.deepcopy(nets.critic).requires_grad_(False)
    opt = fused_adam(nets.parameters(), 3e-4)
    g = torch.Generator().manual_seed(0)
    batch = {"obs": torch.randn(BATCH, obs), "action": torch.rand(BATCH, act) * 2 - 1, "reward": torch.randn(BATCH),
             "next_obs": torch.randn(BATCH, obs), "done": torch.zeros(BATCH)}

    def step() -> None:
        loss, _ = offline_losses(nets, target, batch, cfg, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _skills(obs: int, act: int, gru_hidden: int, gru_layers: int, bf16: bool) -> Callable[[], None]:
    vae = SkillVAE(obs, act, 8, H, (256, 256), gru_hidden, gru_layers, 0.1)
    opt = fused_adam(vae.parameters(), 3e-4)
    o, a = torch.randn(BATCH, H, obs), torch.rand(BATCH, H, act) * 2 - 1
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss, _ = vae.loss(o, a, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _high_level(obs: int, act: int, hidden: str) -> Callable[[], None]:
    config = resolve_config("short", {"task": "antmaze-medium", "dataset": "unused", "algo": "supe", "seed": 0},
                            ["supe.prior_steps=0", f"supe.high_hidden={hidden}"])
    nets = OfflineNets(obs, act, config.pretrain)
    skills = SkillVAE(obs, act, 8, H, (256, 256), 64, 1, 0.1).requires_grad_(False)
    agent = SUPEAgent(nets, skills, config, torch.Generator().manual_seed(0), -1.0, torch.zeros(1000, 8), "model")
    agent.explore_steps = H  # past the prior phase, at the end of a skill: updates run (SUPE's cadence)
    agent.skill_started[:] = True
    half = BATCH // 2
    batch = {"obs": torch.randn(BATCH, H, obs), "action": torch.rand(BATCH, H, act) * 2 - 1,
             "reward": torch.randn(BATCH, H), "chunk_reward": torch.randn(BATCH), "next_obs": torch.randn(BATCH, obs),
             "done": torch.zeros(BATCH), "start": torch.randint(0, 1000, (BATCH,)),
             "online": torch.arange(BATCH) >= half}
    return lambda: agent.update(batch)


def _rate(step: Callable[[], None], seconds: float) -> float:
    step()  # warm-up (allocations, oneDNN primitive creation)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--obs", type=int, default=31)
    parser.add_argument("--action", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cases: dict[str, Callable[[], None]] = {"baseline: pretraining update": _baseline(args.obs, args.action)}
    for name, (hidden, layers) in SKILL_SIZES.items():
        cases[f"{name} fp32"] = _skills(args.obs, args.action, hidden, layers, False)
        cases[f"{name} bf16"] = _skills(args.obs, args.action, hidden, layers, True)
    cases["high-level update (10 critics 256x3, SUPE)"] = _high_level(args.obs, args.action, "[256, 256, 256]")
    cases["high-level update (10 critics 256x2)"] = _high_level(args.obs, args.action, "[256, 256]")
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(args.rounds):
        for name, step in cases.items():
            rates[name].append(_rate(step, args.seconds))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    base = statistics.median(rates["baseline: pretraining update"])
    rows = [{"case": name, "updates_per_second": statistics.median(v), "vs_baseline": statistics.median(v) / base,
             "rounds": v} for name, v in rates.items()]
    print(f"\n{'case':45s} {'updates/s':>10s} {'x baseline':>11s}")
    for row in rows:
        print(f"{row['case']:45s} {row['updates_per_second']:10.1f} {row['vs_baseline']:11.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "benchmarks/supe_cost.py", "obs_dim": args.obs,
                                    "action_dim": args.action, "batch": BATCH, "horizon": H, "threads": 1,
                                    "machine": platform.processor() or platform.machine(),
                                    "cpu": _cpu_model(), "rows": rows}, indent=2) + "\n")
    print(f"-> {args.out}")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
