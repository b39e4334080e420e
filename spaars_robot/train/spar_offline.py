"""SPAR's offline stages (algos/spar.py), run after the shared pretraining and cached like it.

Stage (i) fits the frozen behaviour-cloning anchor and then the residual onto what it misses; stage (ii) is the
shared pretraining's IQL critic (nothing to train here); stage (iii) improves the residual by Latent
Self-Imitation against that critic. The result depends only on (the pretraining cache entry it started from,
seed, SPARConfig), so `spar`, `bc` and `spaars --set online.raw_init=spar` runs of one seed share it, and like
pretraining it writes an exact-resume checkpoint every `checkpoint_every` updates.
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
from spaars_robot.algos.offline import OfflineNets
from spaars_robot.algos.spar import (
    RectifiedPolicy,
    bc_loss,
    fit_latent_scale,
    lsi_loss,
    make_rectified,
    residual_regression_loss,
    td3bc_loss,
    value_gradient_actor,
)
from spaars_robot.config.training import SPARConfig
from spaars_robot.data.files import atomic_torch_save
from spaars_robot.data.replay import ReplayBuffer
from spaars_robot.errors import TrainingDiverged
from spaars_robot.nn.device import make_generator, set_generator_state
from spaars_robot.train.pretrain import _load_partial, _say
from spaars_robot.train.progress import ProgressDisplay
from spaars_robot.train.stage_cache import cached_stage

TD3BC_SEED_OFFSET = 4343  # the td3bc stage's own batch stream, apart from SPAR's (seed + 4242)
SPAR_VERSION = "spar-v1"  # bump when the stages' maths change, to invalidate caches
TD3BC_VERSION = "td3bc-v1"
LATENT_SCALE_SAMPLES = 10_000


def spar_cache_key(pretrain_entry: str, seed: int, cfg: SPARConfig) -> str:
    # lsi_decode_bf16 came after entries were cached; off, it is what they computed, so it leaves their keys alone
    fields = cfg.model_dump(mode="json", exclude=set() if cfg.lsi_decode_bf16 else {"lsi_decode_bf16"})
    payload = json.dumps({"v": SPAR_VERSION, "pretrain": pretrain_entry, "seed": seed, "cfg": fields}, sort_keys=True)
    return "spar-" + hashlib.sha256(payload.encode()).hexdigest()[:20]


def _stage(step: int, cfg: SPARConfig) -> str:
    if step < cfg.anchor_steps:
        return "anchor"
    return "residual" if step < cfg.anchor_steps + cfg.residual_steps else "lsi"


def spar_offline(nets: OfflineNets, buffer: ReplayBuffer, cfg: SPARConfig, seed: int,
                 progress: ProgressDisplay | None = None, log: Callable[[str], None] | None = None,
                 checkpoint: Path | None = None, checkpoint_every: int = 5_000) -> tuple[RectifiedPolicy, dict]:
    """Run (or continue, from `checkpoint`) the three stages on the normalised offline buffer."""
    device = buffer.obs.device  # the run's device (`train --device`), where the shared pretraining put the buffer
    generator = make_generator(seed + 4242, device)
    obs_dim, action_dim = buffer.obs.shape[1], buffer.action.shape[1]
    with torch.random.fork_rng():  # the initial weights depend on the seed alone, not on whether pretraining was
        torch.manual_seed(seed + 4242)  # computed or read from its cache before (which moves the global stream)
        policy = make_rectified(obs_dim, action_dim, nets.latent_dim, cfg).to(device)
    anchor_opt = fused_adam(policy.anchor.parameters(), cfg.lr)
    residual_opt = fused_adam(policy.residual_parameters(), cfg.lr)
    total = cfg.anchor_steps + cfg.residual_steps + cfg.lsi_steps
    start, history, seconds_before = 0, [], 0.0
    state = _load_partial(checkpoint, total, log) if checkpoint is not None else None
    if state is not None:
        policy.load_state_dict(state["policy"])
        anchor_opt.load_state_dict(state["anchor_opt"])
        residual_opt.load_state_dict(state["residual_opt"])
        set_generator_state(generator, state["generator"])
        start, history, seconds_before = int(state["step"]), json.loads(state["history"]), float(state["seconds"])
        _say(log, f"spar offline stages resumed at step {start}/{total} from {checkpoint}")
    with torch.no_grad():
        stride = max(buffer.size // LATENT_SCALE_SAMPLES, 1)  # spread over the whole dataset, deterministic
        fit_latent_scale(policy, nets.cvae, buffer.obs[:buffer.size:stride], buffer.action[:buffer.size:stride])
    if start >= cfg.anchor_steps:
        policy.freeze_anchor()
    bar = progress.add_task("spar offline stages", total=total, completed=start) if progress and total else None
    t0 = time.perf_counter()
    report_every = max(total // 20, 1)
    for step in range(start, total):
        stage = _stage(step, cfg)
        batch = buffer.sample(cfg.batch_size, generator)
        if stage == "anchor":
            loss, metrics = bc_loss(policy, batch["obs"], batch["action"]), {}
            opt, params = anchor_opt, list(policy.anchor.parameters())
        elif stage == "residual":
            loss, metrics = residual_regression_loss(policy, batch["obs"], batch["action"]), {}
            opt, params = residual_opt, policy.residual_parameters()
        else:
            loss, metrics = lsi_loss(policy, nets.cvae, nets.critic, batch["obs"], cfg, generator)
            opt, params = residual_opt, policy.residual_parameters()
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        opt.step()
        if step + 1 == cfg.anchor_steps:
            policy.freeze_anchor()
        if (step + 1) % report_every == 0 or step + 1 == total:
            history.append({"step": step + 1, "stage": stage, "loss": loss.item(),
                            **{k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in metrics.items()}})
            if not math.isfinite(history[-1]["loss"]):
                raise TrainingDiverged(f"spar offline stage {stage} diverged by step {step + 1}; nothing was cached")
            if log is not None:
                rate = (step + 1 - start) / (time.perf_counter() - t0)
                log(f"spar step {step + 1}/{total} [{stage}] ({rate:.0f} updates/s) "
                    + " ".join(f"{k}={v:.4g}" for k, v in history[-1].items() if k not in ("step", "stage")))
        if bar is not None and ((step + 1) % 100 == 0 or step + 1 == total):
            progress.update(bar, completed=step + 1)
        if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < total:
            atomic_torch_save(checkpoint, {
                "policy": policy.state_dict(), "anchor_opt": anchor_opt.state_dict(),
                "residual_opt": residual_opt.state_dict(), "generator": generator.get_state(), "step": step + 1,
                "total_steps": total, "history": json.dumps(history),
                "seconds": seconds_before + time.perf_counter() - t0})
    policy.freeze_anchor()
    elapsed = seconds_before + time.perf_counter() - t0
    return policy, {"seconds": elapsed, "updates_per_second": (total - start) / max(elapsed, 1e-9),
                    "history": history, **({"resumed_at_step": start} if start else {})}


def spar_offline_cached(nets: OfflineNets, buffer: ReplayBuffer, cfg: SPARConfig, seed: int, pretrain_entry: str,
                        cache_dir: Path, progress: ProgressDisplay | None = None,
                        log: Callable[[str], None] | None = None,
                        checkpoint_every: int = 5_000) -> tuple[RectifiedPolicy, dict]:
    """Load SPAR's offline result for (pretraining entry, seed, cfg) or compute and store it (train/stage_cache.py)."""
    def load(state: dict) -> RectifiedPolicy:
        policy = make_rectified(buffer.obs.shape[1], buffer.action.shape[1], nets.latent_dim, cfg)
        policy.load_state_dict(state["policy"])
        policy.to(buffer.obs.device)
        policy.freeze_anchor()
        return policy

    return cached_stage(cache_dir, spar_cache_key(pretrain_entry, seed, cfg), "SPAR's offline stages", load,
                        lambda partial: spar_offline(nets, buffer, cfg, seed, progress, log, partial, checkpoint_every),
                        lambda policy: {"policy": policy.state_dict()}, log)


def td3bc_offline(policy: RectifiedPolicy, critic: torch.nn.Module, buffer: ReplayBuffer, steps: int,
                  batch_size: int, lr: float, alpha: float, generator: torch.Generator,
                  log: Callable[[str], None] | None = None) -> tuple[RectifiedPolicy, dict]:
    """`--algo td3bc`'s offline improvement: from SPAR's anchor, TD3+BC's actor loss for `steps` updates.

    Given LSI's budget by the caller (`spar.lsi_steps`), so TD3+BC and SPAR improve the same anchor, on the same
    critic, for the same number of updates: the value gradient against the weighted regression, nothing else.
    """
    actor = value_gradient_actor(policy)
    params = list(actor.anchor.parameters())
    opt = fused_adam(params, lr)
    t0 = time.perf_counter()
    history = []
    report_every = max(steps // 10, 1)
    for step in range(steps):
        batch = buffer.sample(batch_size, generator)
        loss, metrics = td3bc_loss(actor, critic, batch["obs"], batch["action"], alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        opt.step()
        if (step + 1) % report_every == 0 or step + 1 == steps:
            history.append({"step": step + 1, "loss": loss.item(), **{k: float(v) for k, v in metrics.items()}})
            if not math.isfinite(history[-1]["loss"]):
                raise TrainingDiverged(f"td3bc offline stage diverged by step {step + 1}")
            _say(log, f"td3bc step {step + 1}/{steps} " + " ".join(
                f"{k}={v:.4g}" for k, v in history[-1].items() if k != "step"))
    elapsed = time.perf_counter() - t0
    return actor, {"steps": steps, "seconds": elapsed, "updates_per_second": steps / max(elapsed, 1e-9),
                   "history": history}


def td3bc_offline_cached(spar_policy: RectifiedPolicy, nets: OfflineNets, buffer: ReplayBuffer, cfg: SPARConfig,
                         alpha: float, seed: int, spar_entry: str, cache_dir: Path,
                         log: Callable[[str], None] | None = None) -> tuple[RectifiedPolicy, dict]:
    """`td3bc_offline` from SPAR's cached anchor (`spar_entry`), itself cached by (that entry, alpha, seed).

    A minute of updates, cached all the same: every offline stage after pretraining lives in the one stage cache,
    so a run's policy never depends on whether a stage was computed or read, and a resume or a second algorithm of
    the seed reads it.
    """
    payload = json.dumps({"v": TD3BC_VERSION, "spar": spar_entry, "alpha": alpha, "seed": seed}, sort_keys=True)
    key = "td3bc-" + hashlib.sha256(payload.encode()).hexdigest()[:20]

    def load(state: dict) -> RectifiedPolicy:
        actor = value_gradient_actor(spar_policy)
        actor.load_state_dict(state["policy"])
        return actor

    def compute(_partial: Path) -> tuple[RectifiedPolicy, dict]:
        generator = make_generator(seed + TD3BC_SEED_OFFSET, buffer.obs.device)
        return td3bc_offline(spar_policy, nets.critic, buffer, cfg.lsi_steps, cfg.batch_size, cfg.lr, alpha,
                             generator, log)

    return cached_stage(cache_dir, key, "TD3+BC's offline stage", load, compute,
                        lambda actor: {"policy": actor.state_dict()}, log)
