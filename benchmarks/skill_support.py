"""Where do the high level's skills land, against the skills the data holds? (issue 18)

From one finished `supe` or `spaars-supe` run, on dataset states (2,000, fixed draw): the skill z of the high-level
policy (its mean and a sample, mapped as the run's `supe.skill_space` maps them), of the learned prior p(z|s) (a
sample and its mean) and of the dataset's own chunks (the encoder's mean on the chunk starting at that state), and
for each: the median |z|, the share of the high level's squashed coordinates |u| > 0.99 (what the skill is in the
high level's own action space), the median Mahalanobis distance to the prior at the state, and the share of the
decoder's mean action that the dataset CVAE scores out of support (the run's calibrated threshold: what the training
log's out_of_support_rate counts). The dataset's own actions are the reference row.

    MUJOCO_GL=egl .venv/bin/python benchmarks/skill_support.py runs/kitchen-supe-safe-set-88f7a43f-on-mixed-supe-short/seed0 \
        --out benchmarks/results/skill_support_kitchen_seed0.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from spaars_robot.algos.supe import action_from_skill, skill_from_action
from spaars_robot.config.training import SKILL_ALGOS, load_run_config
from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.export.from_run import load_run_for_export
from spaars_robot.nn.cvae import CVAE
from spaars_robot.nn.skills import SkillVAE


def _row(skills: SkillVAE, cvae: CVAE, space: str, s: torch.Tensor, z: torch.Tensor, threshold: float
         ) -> dict[str, float]:
    mean, std = skills.prior_dist(s)
    u = action_from_skill(skills, space, z, s)
    action = skills.decode_mean(s, z)
    score = cvae.support_score(s, action)
    return {"z_norm_median": float(z.norm(dim=-1).median()),
            "u_saturated_share": float((u.abs() > 0.99).float().mean()),
            "prior_mahalanobis_median": float(((z - mean) / std).norm(dim=-1).median()),
            "out_of_support_share": float((score > threshold).float().mean()),
            "support_score_median": float(score.median())}


@torch.no_grad()
def measure(run_dir: Path, states: int, seed: int) -> dict:
    config, facts = load_run_config(run_dir)
    if config.algo not in SKILL_ALGOS:
        raise SystemExit(f"{run_dir}: a {config.algo} run has no skills (supe or spaars-supe runs do)")
    stack, info = load_run_for_export(run_dir)  # the networks as the run's bundle would hold them
    high, skills = stack.high_policy, stack.skills
    dataset = OfflineDataset.load(facts.dataset_path)
    horizon, space = config.supe.horizon, stack.skill_space
    starts = dataset.chunk_starts(horizon)
    pick = starts[torch.as_tensor(np.random.default_rng(seed).choice(starts.numel(), states, replace=False))]
    chunk = dataset.chunks(pick, horizon)
    chunk_obs, chunk_actions = stack.normalizer(chunk["obs"].float()), chunk["action"].float()
    s = chunk_obs[:, 0]
    generator = torch.Generator().manual_seed(seed)
    threshold = info.support_threshold
    prior_mean, prior_std = skills.prior_dist(s)
    rows = {
        "high level, mean": skill_from_action(skills, space, high.mean_action(s), s),
        "high level, sample": skill_from_action(skills, space, high.sample(s, generator)[0], s),
        "prior, sample": prior_mean + prior_std * torch.randn(prior_mean.shape, generator=generator),
        "prior, mean": prior_mean,
        "data's chunks (encoder mean)": skills.encode(chunk_obs, chunk_actions)[0],
    }
    out = {name: _row(skills, stack.cvae, space, s, z, threshold) for name, z in rows.items()}
    data_score = stack.cvae.support_score(s, chunk_actions[:, 0])
    out["dataset actions"] = {"out_of_support_share": float((data_score > threshold).float().mean()),
                              "support_score_median": float(data_score.median())}
    return {"run": str(run_dir), "task": config.task, "algo": config.algo, "seed": config.seed,
            "skill_space": space, "states": states, "support_threshold": threshold,
            "prior_std_median": float(prior_std.median()), "rows": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--states", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = measure(args.run_dir, args.states, args.seed)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"{result['run']} ({result['algo']}, skill space {result['skill_space']}), threshold "
          f"{result['support_threshold']:.4f}, the prior's std (median over states and dims) "
          f"{result['prior_std_median']:.4f}")
    for name, row in result["rows"].items():
        print(f"  {name:30s} " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"-> {args.out}")


if __name__ == "__main__":
    main()
