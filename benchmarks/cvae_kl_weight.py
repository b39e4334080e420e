"""Evidence for the CVAE KL weight (`pretrain.cvae_kl_weight`): does the latent action space span the data?

    MUJOCO_GL=egl .venv/bin/python benchmarks/cvae_kl_weight.py --dataset datasets/spaars/hopper-medium-v0
    MUJOCO_GL=egl .venv/bin/python benchmarks/cvae_kl_weight.py --steps 2000      # quick look

Why: SPAARS explores in the decoder's latent space, a = D(s, z) with z in [-z_max, z_max]^k. That only
explores if D(s, .) reaches the actions the data holds at s. PLAS's loss, MSE(a) averaged over the A
action dims + beta * KL / k, has a collapsed posterior (KL = 0, D ignores z) as its exact optimum whenever
the data's action variance left after conditioning on s is below beta * A / (2k) = beta / 4 (k = 2A): for a
Gaussian residual of variance v per dim, coding it to distortion D per dim costs (A/2) ln(v/D) nats of KL, so
the loss D + (beta / k) (A/2) ln(v/D) is minimised at D = beta * A / (2k); when that exceeds v, nothing is
coded (D = v, KL = 0). Datasets from one stochastic SAC policy (ours) have residual variance ~0.03, below PLAS's
0.5 / 4 = 0.125, so at PLAS's beta = 0.5 the latent space collapses to one action per state.

Measured per beta, on held-out episodes (pairs never trained on), same seed/optimiser/batch as pretraining:
- KL and held-out reconstruction (z = encoder mean);
- latent reach: for each held-out (s, a), the best of `--reach-samples` decodes D(s, z), z uniform in the
  box, as squared error to a; compared with the error of D(s, 0) (what a collapsed space offers). A reach
  ratio near 1 means the latent policy cannot steer toward the data's actions; near 0 means it can;
- spread of D(s, z) over the box (mean per-dim std), against the data's residual action std;
- the fraction of box decodes D(s, z) that the support monitor flags (a latent space that reaches further but
  decodes out of support is no better);
- support-score separation: AUROC of dataset actions vs uniform and vs perturbed (N(0, 0.3)) actions, and
  the fractions flagged at the calibrated 0.99-quantile threshold (the support monitor's behaviour).
Nothing here looks at returns: the choice is made on what the latent space can represent, not on scores.
Results: a table on stdout and benchmarks/results/cvae_kl_weight.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from cvae_width import WidthRun, evaluate, heldout_split, resolve_dataset

from spaars_robot.config.training import PretrainConfig
from spaars_robot.data.dataset import OfflineDataset

RESULTS = Path(__file__).resolve().parent / "results" / "cvae_kl_weight.json"


@torch.no_grad()
def latent_reach(run: WidthRun, obs: torch.Tensor, action: torch.Tensor, z_max: float, samples: int,
                 seed: int, threshold: float) -> dict:
    """How close the decoder gets to each held-out action from inside the latent box, and whether what the
    box decodes to stays in support (the trade-off a smaller KL weight moves along)."""
    g = torch.Generator().manual_seed(seed + 2)
    best = torch.full((obs.shape[0],), float("inf"))
    decoded, flagged = [], []
    for i in range(samples):
        z = (torch.rand(obs.shape[0], run.latent_dim, generator=g) * 2 - 1) * z_max
        a_hat = run.cvae.decode(obs, z)
        best = torch.minimum(best, (a_hat - action).pow(2).mean(-1))
        if i < 32:
            decoded.append(a_hat)
            flagged.append((run.cvae.support_score(obs, a_hat) > threshold).float().mean())
    centre = (run.cvae.decode(obs, torch.zeros(obs.shape[0], run.latent_dim)) - action).pow(2).mean(-1)
    return {"reach_mse_best_of_samples": round(float(best.mean()), 6), "reach_mse_z0": round(float(centre.mean()), 6),
            "reach_ratio": round(float(best.mean() / centre.mean().clamp_min(1e-12)), 4),
            "decoded_std_over_box": round(float(torch.stack(decoded).std(0).mean()), 5),
            "box_decodes_flagged_fraction": round(float(torch.stack(flagged).mean()), 4), "reach_samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="Minari-layout dataset dir (default: the generated hopper/walker2d medium)")
    parser.add_argument("--steps", type=int, default=10_000, help="CVAE updates per KL weight")
    parser.add_argument("--weights", default="0.5,0.1,0.05,0.02", help="comma-separated KL weights (PLAS: 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--heldout", type=float, default=0.1, help="fraction of episodes held out")
    parser.add_argument("--eval-pairs", type=int, default=5_000, help="held-out pairs scored (at most)")
    parser.add_argument("--reach-samples", type=int, default=256, help="latent samples per state for the reach test")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = PretrainConfig()
    dataset_path = resolve_dataset(args.dataset)
    dataset = OfflineDataset.load(dataset_path)
    train, held = heldout_split(dataset, args.heldout, args.eval_pairs, args.seed)
    width = base.cvae_hidden[0]
    print(f"dataset {dataset_path}: {train['obs'].shape[0]} train / {len(held['rows'])} held-out pairs; CVAE {base.cvae_hidden}, "
          f"k = {base.cvae_latent_dim or 2 * dataset.action_dim}, z_max {base.z_max}, {args.steps} updates each",
          flush=True)
    results: dict[str, dict] = {}
    for weight in [float(w) for w in args.weights.split(",")]:
        cfg = base.model_copy(update={"cvae_kl_weight": weight})
        run = WidthRun(width, dataset.obs_dim, dataset.action_dim, cfg, args.seed)
        t0 = time.perf_counter()
        run.train_chunk(train["obs"], train["action"], args.steps, cfg.batch_size)
        record = {"kl_weight": weight, "collapse_bound_beta_over_4": weight * dataset.action_dim / (2 * run.latent_dim),
                  "kl_final": run.history[-1]["cvae/kl"], "train_recon_final": run.history[-1]["cvae/recon"],
                  "seconds": round(time.perf_counter() - t0, 1),
                  **evaluate(run, train, held, cfg.support_quantile, cfg.support_samples, args.seed)}
        record |= latent_reach(run, held["obs"], held["action"], cfg.z_max, args.reach_samples, args.seed,
                               record["threshold"])
        results[str(weight)] = record
        print(f"  beta {weight:<5} KL {record['kl_final']:.4f}  recon(mu) {record['recon_mse_heldout_mu']:.4f}  "
              f"reach {record['reach_mse_best_of_samples']:.4f} vs z=0 {record['reach_mse_z0']:.4f} "
              f"(ratio {record['reach_ratio']:.2f})  decoded std {record['decoded_std_over_box']:.3f}  "
              f"box decodes flagged {record['box_decodes_flagged_fraction']:.3f}  "
              f"AUROC unif {record['auroc_dataset_vs_uniform']:.3f} pert {record['auroc_dataset_vs_perturbed']:.3f}  "
              f"flagged data/unif/pert {record['scores']['dataset']['flagged_fraction']:.3f}/"
              f"{record['scores']['uniform']['flagged_fraction']:.3f}/"
              f"{record['scores']['perturbed_0.3']['flagged_fraction']:.3f}", flush=True)
    residual_std = float((held["action"] - held["action"].mean(0)).std(0).mean())
    report = {"command": "python " + " ".join(sys.argv), "dataset": str(dataset_path), "steps": args.steps,
              "seed": args.seed, "threads": args.threads, "loadavg_start": [round(x, 2) for x in os.getloadavg()],
              "action_std_unconditional": round(residual_std, 4), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
