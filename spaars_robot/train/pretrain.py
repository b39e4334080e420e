"""Offline pretraining shared by every algorithm that starts from data (methods.md 6.2).

One loop trains, per gradient step on a dataset batch:
  - the CVAE on unordered (s, a) pairs (PLAS objective),
  - the shared critic ensemble, V and the raw policy with IQL (expectile V, TD Q, AWR actor),
  - after `latent_actor_start`, the latent policy through the frozen decoder (PLAS: max Q(s, D(s, z))).
Then the support threshold is calibrated as a quantile of dataset support scores.

The result depends only on (dataset content, seed, PretrainConfig), so it is cached under a hash of
those and reused by spaars, iql, latent and raw runs: compute is never paid twice. Pretraining is the
longest single stretch of a run (about 20 min of the `short` protocol), so it also writes an exact-resume
checkpoint (`<key>.partial.pt` beside the cache entry) every `checkpoint_every` updates: a run killed
half-way through pretraining continues from there, bit for bit, instead of starting again.

It runs on the run's device (`train --device`). Pretraining on a GPU gives other numbers than on the CPU
(kernels, random streams), so its entries get their own key (`<key>-cuda`); CPU entries keep theirs. A cache
entry is read to the CPU, checked, then moved to the device.
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spaars_robot.algos.base import fused_adam, polyak_update
from spaars_robot.algos.offline import OfflineNets, offline_losses, plas_latent_loss
from spaars_robot.config.training import PretrainConfig
from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.data.files import atomic_torch_save, safe_torch_load
from spaars_robot.data.replay import ReplayBuffer
from spaars_robot.errors import TrainingDiverged
from spaars_robot.nn.device import make_generator
from spaars_robot.nn.normalizer import ObsNormalizer, kept_dims
from spaars_robot.train.progress import ProgressDisplay

PROGRESS_EVERY_UPDATES = 100  # progress display updates (cheap, but not per step)
PRETRAIN_VERSION = "pretrain-v1"  # bump when the pretraining maths changes, to invalidate caches


def dataset_fingerprint(dataset: OfflineDataset) -> str:
    checksum = dataset.metadata.get("spaars_checksums", {}).get("main_data.hdf5")
    if checksum:
        return checksum
    digest = hashlib.sha256()
    for tensor in dataset.tensors().values():
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


# Fields added to PretrainConfig after pretrain-v1, with the value that reproduces pretrain-v1's maths: left out
# of the key while they hold it, so cache entries made before the field existed keep their key and meaning.
ADDED_FIELDS_NEUTRAL = {"target_subset": None, "observation_dims": None}


def cache_key(dataset: OfflineDataset, seed: int, cfg: PretrainConfig) -> str:
    fields = {k: v for k, v in cfg.model_dump(mode="json").items()
              if not (k in ADDED_FIELDS_NEUTRAL and v == ADDED_FIELDS_NEUTRAL[k])}
    payload = json.dumps({"v": PRETRAIN_VERSION, "data": dataset_fingerprint(dataset), "seed": seed,
                          "cfg": fields}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def iql_reward_scale(dataset: OfflineDataset) -> float:
    """IQL locomotion scaling: 1000 / (max - min episode return) over the dataset's episodes."""
    spread = float(dataset.episode_return.max() - dataset.episode_return.min())
    return 1000.0 / spread if spread > 1e-6 else 1.0


def device_suffix(device: torch.device) -> str:
    """What a cache key gets for pretraining on `device`: nothing on the CPU (and meta, which computes nothing and
    so only ever reads CPU entries), `-cuda` on a GPU, whose numbers differ from the CPU's."""
    return "" if device.type in ("cpu", "meta") else f"-{device.type}"


def normalized_offline_buffer(dataset: OfflineDataset, nets: OfflineNets) -> ReplayBuffer:
    """The dataset as a replay buffer in the networks' input space (normalised obs, scaled reward), on their device."""
    with torch.no_grad():
        tensors = {name: tensor.to(nets.device) for name, tensor in dataset.tensors().items()}
        tensors = {**tensors, "obs": nets.normalizer(tensors["obs"]), "next_obs": nets.normalizer(tensors["next_obs"]),
                   "reward": tensors["reward"] * nets.reward_scale}
    return ReplayBuffer.from_tensors(tensors)


def pretraining_setup(dataset: OfflineDataset, cfg: PretrainConfig, seed: int, device: torch.device | str = "cpu",
                      ) -> tuple[dict[str, Any], ReplayBuffer, torch.Generator]:
    """Everything pretraining updates (what a partial checkpoint holds), the dataset buffer and the generator, all on
    `device`. The networks are initialised on the CPU from the seed (the same weights on every device), then moved."""
    torch.manual_seed(seed)
    generator = make_generator(seed, device)
    nets = OfflineNets(dataset.obs_dim, dataset.action_dim, cfg)
    mean, std = dataset.observation_stats()
    nets.normalizer = ObsNormalizer(mean, std, keep=kept_dims(cfg.observation_dims, dataset.obs_dim))
    if cfg.reward_scale == "iql":
        nets.reward_scale.fill_(iql_reward_scale(dataset))
    nets.to(device)
    buffer = normalized_offline_buffer(dataset, nets)
    critic_target = copy.deepcopy(nets.critic).requires_grad_(False)
    main_opt = fused_adam(list(nets.critic.parameters()) + list(nets.value.parameters())
                          + list(nets.raw_policy.parameters()), cfg.lr)
    cvae_opt = fused_adam(nets.cvae.parameters(), cfg.cvae_lr)
    latent_opt = fused_adam(nets.latent_policy.parameters(), cfg.lr)
    resumable = {"nets": nets, "critic_target": critic_target, "main_opt": main_opt, "cvae_opt": cvae_opt,
                 "latent_opt": latent_opt}
    return resumable, buffer, generator


def pretrain(dataset: OfflineDataset, cfg: PretrainConfig, seed: int, bf16: bool = False,
             progress: ProgressDisplay | None = None, log: Callable[[str], None] | None = None,
             checkpoint: Path | None = None, checkpoint_every: int = 5_000, device: torch.device | str = "cpu",
             scalars: Callable[[int, dict[str, float]], None] | None = None) -> tuple[OfflineNets, dict]:
    """Run (or continue, from `checkpoint`) the offline pretraining loop and calibrate the support threshold.

    `scalars(step, metrics)` receives the same points as train.log and the cached history (TensorBoard, W&B).
    """
    resumable, buffer, generator = pretraining_setup(dataset, cfg, seed, device)
    nets, critic_target = resumable["nets"], resumable["critic_target"]
    main_opt, cvae_opt, latent_opt = resumable["main_opt"], resumable["cvae_opt"], resumable["latent_opt"]
    latent_params = list(nets.latent_policy.parameters())
    start, history, seconds_before = 0, [], 0.0
    state = _load_partial(checkpoint, cfg.steps, log) if checkpoint is not None else None
    if state is not None:
        for name, obj in resumable.items():
            obj.load_state_dict(state[name])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start, history, seconds_before = int(state["step"]), json.loads(state["history"]), float(state["seconds"])
        _say(log, f"pretrain resumed at step {start}/{cfg.steps} from {checkpoint}")
    latent_start = int(cfg.latent_actor_start * cfg.steps)
    autocast = torch.autocast(nets.device.type, dtype=torch.bfloat16, enabled=bf16)
    bar = progress.add_task("offline pretraining", total=cfg.steps, completed=start) if progress else None
    t0 = time.perf_counter()
    for step in range(start, cfg.steps):
        batch = buffer.sample(cfg.batch_size, generator)
        with autocast:
            loss, metrics = offline_losses(nets, critic_target, batch, cfg, generator)
        cvae_opt.zero_grad(set_to_none=True)
        main_opt.zero_grad(set_to_none=True)
        loss.backward()
        cvae_opt.step()
        main_opt.step()
        polyak_update(critic_target, nets.critic, cfg.tau)
        if step >= latent_start:
            with autocast:
                latent_loss = plas_latent_loss(nets, batch["obs"])
            latent_opt.zero_grad(set_to_none=True)
            latent_loss.backward(inputs=latent_params)  # decoder and critic stay frozen (PLAS)
            latent_opt.step()
            metrics["plas/latent_q"] = -latent_loss.detach()
        if (step + 1) % max(cfg.steps // 20, 1) == 0 or step + 1 == cfg.steps:
            history.append({"step": step + 1, **{k: float(v) for k, v in metrics.items()}})
            diverged = sorted(k for k, v in history[-1].items() if not math.isfinite(v))
            if diverged:  # checked where the metrics are synchronised anyway: no per-step .item()
                raise TrainingDiverged(f"offline pretraining diverged by step {step + 1}: {', '.join(diverged)} "
                                       "non-finite; nothing was cached (try a lower pretrain.lr)")
            if scalars is not None:
                scalars(step + 1, {k: v for k, v in history[-1].items() if k != "step"})
            if log is not None:
                rate = (step + 1 - start) / (time.perf_counter() - t0)
                log(f"pretrain step {step + 1}/{cfg.steps} ({rate:.0f} updates/s) "
                    + " ".join(f"{k}={v:.4g}" for k, v in history[-1].items() if k != "step"))
        if bar is not None and ((step + 1) % PROGRESS_EVERY_UPDATES == 0 or step + 1 == cfg.steps):
            progress.update(bar, completed=step + 1)
        if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < cfg.steps:
            atomic_torch_save(checkpoint, {
                **{name: obj.state_dict() for name, obj in resumable.items()},
                "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "step": step + 1,
                "total_steps": cfg.steps, "history": json.dumps(history),
                "seconds": seconds_before + time.perf_counter() - t0})
    elapsed = seconds_before + time.perf_counter() - t0
    _require_finite(nets, "offline pretraining result (nothing was cached)")
    info = calibrate(nets, buffer, cfg, generator)
    info |= {"updates_per_second": cfg.steps / elapsed, "seconds": elapsed, "history": history}
    if start:
        info["resumed_at_step"] = start
    return nets, info


def _load_cached(path: Path, dataset: OfflineDataset, cfg: PretrainConfig,
                 log: Callable[[str], None] | None) -> tuple[OfflineNets, dict] | None:
    """A cache entry (on the CPU), or None when it is unreadable: it is set aside and recomputed (derived data)."""
    try:
        state = safe_torch_load(path)
        nets = OfflineNets(dataset.obs_dim, dataset.action_dim, cfg)
        nets.load_state_dict(state["nets"])
        _require_finite(nets, f"cache entry {path}")
        return nets, json.loads(state["info"])
    except Exception as exc:  # torch.load and load_state_dict raise many types on a damaged file
        return _set_aside(path, exc, log, "pretraining again")


def _require_finite(nets: nn.Module, what: str) -> None:
    # support_threshold is +inf until calibrate() sets it: the one value allowed to be non-finite here
    bad = [name for name, tensor in nets.state_dict().items()
           if tensor.is_floating_point() and name != "support_threshold" and not torch.isfinite(tensor).all()]
    if bad:
        raise TrainingDiverged(f"{what}: non-finite values in {', '.join(bad[:5])}"
                               + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))


def _say(log: Callable[[str], None] | None, message: str) -> None:
    (log or (lambda m: print(m, file=sys.stderr)))(message)


def _load_partial(path: Path, total_steps: int, log: Callable[[str], None] | None) -> dict | None:
    """The partial-pretraining checkpoint, or None. An unreadable one is set aside (never deleted) and
    pretraining starts again: the result is then still exact, only the compute is paid again."""
    if not path.exists():
        return None
    try:
        state = safe_torch_load(path)
        if not isinstance(state, dict) or int(state["total_steps"]) != total_steps:
            raise ValueError("not a partial-pretraining checkpoint for this configuration")
        return state
    except Exception as exc:  # as for cache entries: any failure to read it means it cannot be trusted
        return _set_aside(path, exc, log, "pretraining starts from step 0")


def _set_aside(path: Path, exc: Exception, log: Callable[[str], None] | None, consequence: str) -> None:
    """Move an unreadable cache file to `<name>.corrupt` (kept for inspection, never deleted) and say so."""
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    _say(log, f"{path} is unreadable ({type(exc).__name__}: {exc}); moved to {aside.name}, {consequence}")


@torch.no_grad()
def calibrate(nets: OfflineNets, buffer: ReplayBuffer, cfg: PretrainConfig, generator: torch.Generator) -> dict:
    """Support threshold = quantile of dataset support scores; q_scale = mean |Q| on dataset pairs."""
    batch = buffer.sample(min(cfg.support_samples, buffer.size), generator)
    scores = nets.cvae.support_score(batch["obs"], batch["action"])
    threshold = torch.quantile(scores, cfg.support_quantile)
    nets.support_threshold.fill_(float(threshold))
    nets.q_scale.fill_(float(nets.critic(batch["obs"], batch["action"]).abs().mean()))
    return {"support_threshold": float(threshold), "support_quantile": cfg.support_quantile,
            "support_samples": int(scores.numel()), "support_score_median": float(scores.median()),
            "q_scale": float(nets.q_scale), "reward_scale": float(nets.reward_scale)}


def pretrain_cached(dataset: OfflineDataset, cfg: PretrainConfig, seed: int, cache_dir: Path, bf16: bool = False,
                    progress: ProgressDisplay | None = None, log: Callable[[str], None] | None = None,
                    checkpoint_every: int = 5_000, device: torch.device | str = "cpu",
                    scalars: Callable[[int, dict[str, float]], None] | None = None) -> tuple[OfflineNets, dict]:
    """Load the pretraining result for (dataset, seed, cfg, device kind) or compute and store it (file-locked).

    While it computes, `<key>.partial.pt` holds an exact-resume checkpoint; it is removed once the result is stored.
    The networks come back on `device`. `scalars` sees the losses only when pretraining runs here (a cache hit's
    history is in the returned info).
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    key = (cache_key(dataset, seed, cfg) + ("-bf16cvae" if bf16 else "")  # bf16 CVAE, fp32 critics (since 12-02)
           + device_suffix(device))
    path = cache_dir / f"{key}.pt"
    partial = cache_dir / f"{key}.partial.pt"
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a parallel run with the same key waits and then reuses
        cached = _load_cached(path, dataset, cfg, log) if path.exists() else None
        if cached is not None:
            nets, info = cached
            return nets.to(device), {**info, "cache": str(path), "cache_hit": True}
        nets, info = pretrain(dataset, cfg, seed, bf16, progress, log, checkpoint=partial,
                              checkpoint_every=checkpoint_every, device=device, scalars=scalars)
        atomic_torch_save(path, {"nets": nets.state_dict(), "info": json.dumps(info)})
        partial.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (cache_dir / f"{key}.lock").unlink()
    return nets, {**info, "cache": str(path), "cache_hit": False}
