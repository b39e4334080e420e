"""Evidence for the CVAE width (`pretrain.cvae_hidden`): 256x256 (our default) vs 750x750 (PLAS).

    MUJOCO_GL=egl nice -n 5 .venv/bin/python benchmarks/cvae_width.py --dataset datasets/spaars/hopper-medium-v0
    MUJOCO_GL=egl .venv/bin/python benchmarks/cvae_width.py --steps 2000      # quick look

Why: the CVAE is both SPAARS's latent action space and its out-of-support detector, and at 750 units it
costs several IQL updates per pretraining step on this CPU. A narrower one is only acceptable if it
models the data as well: reconstructs held-out pairs as well, and separates in-support from out-of-support
actions as well by `CVAE.support_score`.

Protocol: episodes are split 90/10 into train and held-out (pairs from held-out episodes are never seen).
Each width trains on the same train pairs with the same seed, batch, optimiser and loss as in
`train/pretrain.py` (PLAS objective, fused Adam, observations normalised by train statistics); the two
trainings alternate in chunks so their per-update cost is measured under the same machine load. Then, on
held-out states: reconstruction MSE (z = encoder mean, and z sampled), support scores of the dataset
actions, of uniformly random actions and of the dataset actions + N(0, 0.3) (clipped to [-1, 1]); AUROC
of separating dataset actions from each kind of out-of-support action; and the fraction of each flagged
at the threshold calibrated as in `calibrate()` (0.99-quantile of scores on train pairs).
Results: a table on stdout and benchmarks/results/cvae_width.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from spaars_robot.algos.base import fused_adam
from spaars_robot.config.training import PretrainConfig
from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.nn.cvae import CVAE
from spaars_robot.nn.normalizer import ObsNormalizer

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "cvae_width.json"
DEFAULT_DATASETS = (Path("datasets/spaars/hopper-medium-v0"), Path("datasets/spaars/walker2d-medium-v0"))
PERTURB_STD = 0.3
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def auroc(negatives: torch.Tensor, positives: torch.Tensor) -> float:
    """P(score of a random positive > score of a random negative), ties counted half (Mann-Whitney U)."""
    scores = torch.cat([negatives, positives]).double()
    ranks = torch.empty_like(scores)
    order = scores.argsort()
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    for value in scores.unique()[torch.unique(scores, return_counts=True)[1] > 1]:  # average ranks of ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    n_neg, n_pos = len(negatives), len(positives)
    u = ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_neg * n_pos))


def split_by_episode(dataset: OfflineDataset, heldout: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices of train and held-out transitions; whole episodes go to one side."""
    rng = np.random.default_rng(seed)
    episodes = rng.permutation(len(dataset.episode_start))
    n_held = max(1, round(heldout * len(episodes)))
    rows = [np.arange(dataset.episode_start[e], dataset.episode_start[e] + dataset.episode_length[e]) for e in episodes]
    held = np.concatenate(rows[:n_held])
    train = np.concatenate(rows[n_held:])
    return torch.from_numpy(train), torch.from_numpy(held)


class WidthRun:
    """One CVAE width: model, optimiser, its own generator, and the time spent in its updates."""

    def __init__(self, width: int, obs_dim: int, action_dim: int, cfg: PretrainConfig, seed: int) -> None:
        torch.manual_seed(seed)
        self.width = width
        self.latent_dim = cfg.cvae_latent_dim or 2 * action_dim
        self.cvae = CVAE(obs_dim, action_dim, self.latent_dim, (width, width), cfg.cvae_kl_weight)
        self.opt = fused_adam(self.cvae.parameters(), cfg.cvae_lr)
        self.generator = torch.Generator().manual_seed(seed)
        self.steps, self.seconds = 0, 0.0
        self.history: list[dict] = []

    def update(self, obs: torch.Tensor, action: torch.Tensor) -> dict[str, torch.Tensor]:
        loss, metrics = self.cvae.loss(obs, action, self.generator)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return metrics

    def train_chunk(self, obs: torch.Tensor, action: torch.Tensor, steps: int, batch_size: int) -> None:
        t0 = time.perf_counter()
        for _ in range(steps):
            idx = torch.randint(0, obs.shape[0], (batch_size,), generator=self.generator)
            metrics = self.update(obs[idx], action[idx])
        self.seconds += time.perf_counter() - t0
        self.steps += steps
        self.history.append({"step": self.steps, **{k: round(float(v), 5) for k, v in metrics.items()}})

    def flops_per_update(self, obs: torch.Tensor, action: torch.Tensor, batch_size: int) -> int:
        state = {k: v.clone() for k, v in self.cvae.state_dict().items()}
        with FlopCounterMode(display=False) as counter:
            loss, _ = self.cvae.loss(obs[:batch_size], action[:batch_size], torch.Generator().manual_seed(0))
            loss.backward()
        self.cvae.zero_grad(set_to_none=True)
        self.cvae.load_state_dict(state)
        return int(counter.get_total_flops())


def score_summary(scores: torch.Tensor, threshold: float) -> dict:
    q = torch.quantile(scores, torch.tensor(QUANTILES, dtype=scores.dtype))
    return {"quantiles": {str(k): round(float(v), 5) for k, v in zip(QUANTILES, q)},
            "mean": round(float(scores.mean()), 5), "flagged_fraction": round(float((scores > threshold).float().mean()), 4)}


@torch.no_grad()
def evaluate(run: WidthRun, train: dict[str, torch.Tensor], held: dict[str, torch.Tensor], quantile: float,
             calibration_pairs: int, seed: int) -> dict:
    """Held-out reconstruction and support-score separation, with the threshold set as `calibrate()` does."""
    g = torch.Generator().manual_seed(seed + 1)
    cal = torch.randint(0, train["obs"].shape[0], (min(calibration_pairs, train["obs"].shape[0]),), generator=g)
    threshold = float(torch.quantile(run.cvae.support_score(train["obs"][cal], train["action"][cal]), quantile))
    obs, action = held["obs"], held["action"]
    mu, log_std = run.cvae.encode(obs, action)
    recon_mu = float((run.cvae.decode(obs, mu) - action).pow(2).mean())
    z = mu + log_std.exp() * torch.randn(mu.shape, generator=g)
    recon_sampled = float((run.cvae.decode(obs, z) - action).pow(2).mean())
    uniform = torch.rand(action.shape, generator=g) * 2 - 1
    perturbed = (action + PERTURB_STD * torch.randn(action.shape, generator=g)).clamp(-1.0, 1.0)
    scores = {"dataset": run.cvae.support_score(obs, action), "uniform": run.cvae.support_score(obs, uniform),
              "perturbed_0.3": run.cvae.support_score(obs, perturbed)}
    return {
        "threshold": round(threshold, 5), "support_quantile": quantile,
        "recon_mse_heldout_mu": round(recon_mu, 6), "recon_mse_heldout_sampled_z": round(recon_sampled, 6),
        "scores": {k: score_summary(v, threshold) for k, v in scores.items()},
        "auroc_dataset_vs_uniform": round(auroc(scores["dataset"], scores["uniform"]), 4),
        "auroc_dataset_vs_perturbed": round(auroc(scores["dataset"], scores["perturbed_0.3"]), 4),
    }


def heldout_split(dataset: OfflineDataset, heldout: float, eval_pairs: int, seed: int) -> tuple[dict, dict]:
    """Train pairs and at most `eval_pairs` held-out pairs from whole held-out episodes, observations normalised
    with train statistics only (so nothing about the held-out episodes leaks into the CVAE)."""
    train_rows, held_rows = split_by_episode(dataset, heldout, seed)
    normalizer = ObsNormalizer(dataset.obs[train_rows].mean(0), dataset.obs[train_rows].std(0))
    with torch.no_grad():
        obs = normalizer(dataset.obs)
    train = {"obs": obs[train_rows].contiguous(), "action": dataset.action[train_rows].contiguous()}
    pick = torch.randperm(len(held_rows), generator=torch.Generator().manual_seed(seed))[:eval_pairs]
    held = {"obs": obs[held_rows[pick]], "action": dataset.action[held_rows[pick]], "rows": held_rows}
    return train, held


def resolve_dataset(path: str | None) -> Path:
    """--dataset through the project's resolver (ids or paths), else the first generated medium dataset."""
    from spaars_robot.data.locate import resolve_dataset as locate
    from spaars_robot.errors import SpaarsError

    for candidate in ([path] if path else [str(p) for p in DEFAULT_DATASETS]):
        try:
            return locate(candidate)
        except SpaarsError:
            continue
    raise SystemExit(f"no dataset at {path or [str(p) for p in DEFAULT_DATASETS]}: pass --dataset (a medium one; "
                     "a random dataset makes uniform actions in-support and the test meaningless)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="Minari-layout dataset dir (default: the generated hopper/walker2d medium)")
    parser.add_argument("--steps", type=int, default=20_000, help="CVAE updates per width")
    parser.add_argument("--widths", default="256,750", help="comma-separated hidden widths (two layers each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=500, help="updates per alternation between widths")
    parser.add_argument("--heldout", type=float, default=0.1, help="fraction of episodes held out")
    parser.add_argument("--eval-pairs", type=int, default=20_000, help="held-out pairs scored (at most)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = PretrainConfig()
    dataset_path = resolve_dataset(args.dataset)
    dataset = OfflineDataset.load(dataset_path)
    train, held = heldout_split(dataset, args.heldout, args.eval_pairs, args.seed)
    load = {"uptime_start": subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    runs = [WidthRun(int(w), dataset.obs_dim, dataset.action_dim, cfg, args.seed) for w in args.widths.split(",")]
    flops = {run.width: run.flops_per_update(train["obs"], train["action"], cfg.batch_size) for run in runs}
    print(f"dataset {dataset_path}: {train['obs'].shape[0]} train / {len(held['rows'])} held-out pairs; "
          f"load {load['loadavg_start']}", flush=True)
    done = 0
    while done < args.steps:
        chunk = min(args.chunk, args.steps - done)
        for run in runs:  # alternate so both widths are timed under the same load
            run.train_chunk(train["obs"], train["action"], chunk, cfg.batch_size)
        done += chunk
        if done % (args.chunk * 10) == 0 or done == args.steps:
            print(f"  {done}/{args.steps}: " + ", ".join(
                f"{r.width}: {r.steps / r.seconds:.0f} upd/s, recon {r.history[-1]['cvae/recon']:.4f}" for r in runs),
                flush=True)
    results = {}
    for run in runs:
        results[str(run.width)] = {
            "hidden": [run.width, run.width], "latent_dim": run.latent_dim,
            "parameters": sum(p.numel() for p in run.cvae.parameters()),
            "flops_per_update": flops[run.width], "updates_per_s": round(run.steps / run.seconds, 2),
            "ms_per_update": round(1000 * run.seconds / run.steps, 3),
            **evaluate(run, train, held, cfg.support_quantile, cfg.support_samples, args.seed),
            "train_history": run.history[:: max(1, len(run.history) // 20)] + run.history[-1:],
        }
    report = {"command": "python " + " ".join(sys.argv), "dataset": str(dataset_path),
              "train_pairs": train["obs"].shape[0], "heldout_pairs": len(held["rows"]), "eval_pairs": held["obs"].shape[0],
              "steps": args.steps, "seed": args.seed, "threads": args.threads, "batch_size": cfg.batch_size,
              "perturb_std": PERTURB_STD, **load,
              "loadavg_end": [round(x, 2) for x in os.getloadavg()], "widths": results}
    print(f"\n{'width':>6}{'params':>10}{'MFLOP/upd':>11}{'ms/upd':>8}{'recon(mu)':>11}{'AUROC unif':>11}"
          f"{'AUROC pert':>11}{'flag data':>10}{'flag unif':>10}{'flag pert':>10}")
    for width, r in results.items():
        s = r["scores"]
        print(f"{width:>6}{r['parameters']:>10}{r['flops_per_update'] / 1e6:>11.1f}{r['ms_per_update']:>8.2f}"
              f"{r['recon_mse_heldout_mu']:>11.5f}{r['auroc_dataset_vs_uniform']:>11.4f}"
              f"{r['auroc_dataset_vs_perturbed']:>11.4f}{s['dataset']['flagged_fraction']:>10.4f}"
              f"{s['uniform']['flagged_fraction']:>10.4f}{s['perturbed_0.3']['flagged_fraction']:>10.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
