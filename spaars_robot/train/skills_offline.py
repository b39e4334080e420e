"""SUPE's offline stage: the OPAL skill VAE (nn/skills.py) on H-step chunks of the dataset, cached like SPAR's stages.

It runs after the shared pretraining and on its normalised buffer (the skill networks see observations as every
other network does), so the entry's key names the pretraining entry it started from; the seed and the skill
fields of SUPEConfig complete it. A partial checkpoint every `checkpoint_every` updates makes a killed run resume
exactly.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from spaars_robot.algos.base import fused_adam
from spaars_robot.algos.supe import action_from_skill
from spaars_robot.config.training import SUPEConfig
from spaars_robot.data.chunks import gather_chunks, sample_starts
from spaars_robot.data.files import atomic_torch_save
from spaars_robot.data.replay import ReplayBuffer
from spaars_robot.errors import TrainingDiverged
from spaars_robot.nn.device import make_generator, set_generator_state
from spaars_robot.nn.skills import SkillVAE
from spaars_robot.train.pretrain import _load_partial, _say
from spaars_robot.train.progress import ProgressDisplay
from spaars_robot.train.stage_cache import cached_stage

SKILLS_VERSION = "skills-v1"  # bump when the skill VAE's maths change, to invalidate caches
LABEL_BLOCK = 4096  # dataset chunks encoded per forward pass when labelling
SKILL_FIELDS = ("horizon", "skill_dim", "hidden", "gru_hidden", "gru_layers", "kl_weight", "skill_steps",
                "skill_lr", "batch_size")


def skills_cache_key(pretrain_entry: str, seed: int, cfg: SUPEConfig) -> str:
    fields = cfg.model_dump(mode="json", include=set(SKILL_FIELDS))
    payload = json.dumps({"v": SKILLS_VERSION, "pretrain": pretrain_entry, "seed": seed, "cfg": fields},
                         sort_keys=True)
    return "skills-" + hashlib.sha256(payload.encode()).hexdigest()[:20]


def train_skills(buffer: ReplayBuffer, starts: torch.Tensor, cfg: SUPEConfig, seed: int,
                 progress: ProgressDisplay | None = None, log: Callable[[str], None] | None = None,
                 checkpoint: Path | None = None, checkpoint_every: int = 5_000) -> tuple[SkillVAE, dict]:
    """Fit (or continue fitting, from `checkpoint`) the skill VAE on chunks starting at `starts` of `buffer`."""
    device = buffer.obs.device
    generator = make_generator(seed + 777, device)
    with torch.random.fork_rng():  # initial weights from the seed alone, whatever ran before in this process
        torch.manual_seed(seed + 777)
        vae = SkillVAE.from_config(buffer.obs.shape[1], buffer.action.shape[1], cfg).to(device)
    opt = fused_adam(vae.parameters(), cfg.skill_lr)
    total, start, history, seconds_before = cfg.skill_steps, 0, [], 0.0
    state = _load_partial(checkpoint, total, log) if checkpoint is not None else None
    if state is not None:
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        set_generator_state(generator, state["generator"])
        start, history, seconds_before = int(state["step"]), json.loads(state["history"]), float(state["seconds"])
        _say(log, f"skill VAE resumed at step {start}/{total} from {checkpoint}")
    bar = progress.add_task("skill VAE (SUPE offline)", total=total, completed=start) if progress and total else None
    t0 = time.perf_counter()
    report_every = max(total // 20, 1)
    for step in range(start, total):
        chunk = gather_chunks(buffer, sample_starts(starts, cfg.batch_size, generator), cfg.horizon, 1.0)
        loss, metrics = vae.loss(chunk["obs"], chunk["action"], generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % report_every == 0 or step + 1 == total:
            history.append({"step": step + 1, "loss": loss.item(), **{k: float(v) for k, v in metrics.items()}})
            if not math.isfinite(history[-1]["loss"]):
                raise TrainingDiverged(f"the skill VAE diverged by step {step + 1}; nothing was cached")
            if log is not None:
                rate = (step + 1 - start) / (time.perf_counter() - t0)
                log(f"skills step {step + 1}/{total} ({rate:.1f} updates/s) "
                    + " ".join(f"{k}={v:.4g}" for k, v in history[-1].items() if k != "step"))
        if bar is not None and ((step + 1) % 20 == 0 or step + 1 == total):
            progress.update(bar, completed=step + 1)
        if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < total:
            atomic_torch_save(checkpoint, {"vae": vae.state_dict(), "opt": opt.state_dict(),
                                           "generator": generator.get_state(), "step": step + 1, "total_steps": total,
                                           "history": json.dumps(history),
                                           "seconds": seconds_before + time.perf_counter() - t0})
    vae.requires_grad_(False)
    elapsed = seconds_before + time.perf_counter() - t0
    return vae, {"seconds": elapsed, "updates_per_second": (total - start) / max(elapsed, 1e-9), "history": history,
                 "chunks": int(starts.numel()), **({"resumed_at_step": start} if start else {})}


def skills_cached(buffer: ReplayBuffer, starts: torch.Tensor, cfg: SUPEConfig, seed: int, pretrain_entry: str,
                  cache_dir: Path, progress: ProgressDisplay | None = None, log: Callable[[str], None] | None = None,
                  checkpoint_every: int = 5_000) -> tuple[SkillVAE, dict]:
    """The skill VAE for (pretraining entry, seed, skill fields), from the cache or trained and stored."""
    def load(state: dict) -> SkillVAE:
        vae = SkillVAE.from_config(buffer.obs.shape[1], buffer.action.shape[1], cfg)
        vae.load_state_dict(state["vae"])
        return vae.to(buffer.obs.device).requires_grad_(False)

    return cached_stage(cache_dir, skills_cache_key(pretrain_entry, seed, cfg), "the skill VAE", load,
                        lambda partial: train_skills(buffer, starts, cfg, seed, progress, log, partial,
                                                     checkpoint_every),
                        lambda vae: {"vae": vae.state_dict()}, log)


@torch.no_grad()
def label_offline_chunks(skills: SkillVAE, buffer: ReplayBuffer, starts: torch.Tensor,
                         block: int = LABEL_BLOCK, space: str = "tanh") -> torch.Tensor:
    """u naming the encoder mean of every dataset chunk (SUPE: tanh of it; `space` as supe.skill_space), as a
    [buffer size, k] table indexed by chunk start (zeros where no chunk starts). Fixed blocks, so the labels do not
    depend on anything but the data and the encoder."""

    labels = torch.zeros(buffer.size, skills.skill_dim, device=buffer.obs.device)
    for i in range(0, starts.numel(), block):
        part = starts[i:i + block]
        chunk = gather_chunks(buffer, part, skills.horizon, 1.0)
        labels[part] = action_from_skill(skills, space, skills.encode(chunk["obs"], chunk["action"])[0],
                                         chunk["obs"][:, 0])
    return labels
