"""The runner owns the loop (rsl_rl style): pretraining (cached), online steps, evaluation, logging and
exact-resume checkpoints, for every algorithm. Algorithms only expose explore/act/update/after_eval.

Run directory:  config.yaml  metrics.csv  tb/  checkpoint.pt  pretrain.json  summary.json  train.log
A checkpoint is written at the first episode boundary after every `eval.checkpoint_every` env steps and
holds networks, optimisers, generator state, online replay, phase/gate/transition state, counters and
metrics rows; each training episode resets from a seed derived from its index, so a run resumed after
kill -9 replays exactly what the uninterrupted run would have done.
"""
from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from spaars_robot.config.tasks import TaskSpec, load_task
from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.data.files import atomic_torch_save, atomic_write_json, safe_torch_load
from spaars_robot.envs import make_env
from spaars_robot.envs.evaluation import run_episodes
from spaars_robot.errors import SpaarsError, TrainingDiverged
from spaars_robot.train.config import TrainConfig
from spaars_robot.train.replay import ReplayBuffer, mixed_batch

EPISODE_SEED_STRIDE = 1_000_003
RECENT_STATES = 2_000
METRIC_FIELDS = (
    "step", "phase", "return_mean", "return_std", "normalized_mean", "normalized_std", "eval_raw_rate",
    "train_raw_rate", "out_of_support_rate", "falls", "train_episodes", "novelty", "bc_error",
    "gate_rate_recent", "q_scale", "adv_scale", "wall_seconds", "env_steps_per_second", "event",
)


def load_checkpoint(path: Path) -> dict:
    """A run's checkpoint.pt, or a clear error naming it (it is never modified or removed here)."""
    try:
        state = safe_torch_load(path)
        missing = {"agent", "online", "generator", "counters", "rows", "step", "episode", "wall"} - set(state)
    except Exception as exc:  # torch.load raises many types (pickle, zip, EOF, RuntimeError) on a damaged file
        raise SpaarsError(f"{path}: checkpoint unreadable ({type(exc).__name__}: {exc}); it was left as it is. "
                          "Restore it from a copy, or move it away to restart the run from step 0") from exc
    if missing:
        raise SpaarsError(f"{path}: not a training checkpoint (missing {sorted(missing)}); it was left as it is")
    return state


def evaluate(agent, task: TaskSpec, episodes: int, seed_base: int) -> dict:
    """Deterministic episodes on fixed seeds shared by every algorithm and training seed."""
    returns, raw_rate = run_episodes(agent.act, task, episodes, seed_base,
                                     begin_episode=lambda: agent.begin_episode(evaluation=True))
    norm = [task.normalized_score(r) for r in returns]
    return {"return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
            "normalized_mean": float(np.mean(norm)), "normalized_std": float(np.std(norm)),
            "eval_raw_rate": raw_rate, "episode_returns": returns}


def build_agent(config: TrainConfig, task: TaskSpec, dataset: OfflineDataset | None, cache_dir: Path,
                bf16: bool, progress: Progress | None, log=None):
    """Pretrain (or load from cache) and construct the algorithm; returns (agent, nets or None, info)."""
    generator = torch.Generator().manual_seed(config.seed + 12345)
    if config.algo == "sac":
        from spaars_robot.algos.sac import SACAgent, SACConfig

        sac_cfg = SACConfig(hidden=config.pretrain.hidden, lr=config.online.lr, batch_size=config.online.batch_size)
        return SACAgent(task.obs_dim, task.action_dim, sac_cfg, config.seed, random_steps=5_000), None, {}
    from spaars_robot.train.pretrain import pretrain_cached

    assert dataset is not None
    nets, info = pretrain_cached(dataset, config.pretrain, config.seed, cache_dir, bf16, progress, log,
                                 checkpoint_every=config.eval.checkpoint_every)
    if config.algo == "iql":
        from spaars_robot.algos.iql import IQLAgent

        return IQLAgent(nets, config, generator), nets, info
    from spaars_robot.algos.spaars import SPAARSAgent

    return SPAARSAgent(nets, config, generator), nets, info


class Runner:
    def __init__(self, config: TrainConfig, run_dir: Path, cache_dir: Path, dataset_path: Path | None,
                 bf16: bool = False, show_progress: bool = True, command: str = "") -> None:
        self.config, self.run_dir, self.cache_dir = config, Path(run_dir), Path(cache_dir)
        self.command = command or " ".join(["spaars-robot", *sys.argv[1:]])
        self.dataset_path, self.bf16, self.show_progress = dataset_path, bf16, show_progress
        self.task = load_task(config.task)

    def log(self, message: str) -> None:
        """One line per pretraining checkpoint and evaluation in `train.log` (seeds run without a progress bar)."""
        with open(self.run_dir / "train.log", "a") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {message}\n")

    def _write_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        payload = self.config.model_dump(mode="json") | {"dataset_path": str(self.dataset_path), "bf16": self.bf16,
                                                         "command": self.command}
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(payload, sort_keys=False))

    def run(self, resume: bool = False) -> dict:
        cfg, task = self.config, self.task
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        checkpoint_path = self.run_dir / "checkpoint.pt"
        if resume and not checkpoint_path.exists():
            raise SpaarsError(f"{self.run_dir}: no checkpoint.pt to resume from")
        if not resume and checkpoint_path.exists():
            raise SpaarsError(f"{self.run_dir} already holds a run; use --resume or another --run-dir")
        self._write_config()
        dataset = OfflineDataset.load(self.dataset_path) if cfg.algo != "sac" else None
        if dataset is not None:
            dataset.check_fits(task)
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), disable=not self.show_progress)
        with progress:
            agent, nets, pre_info = build_agent(cfg, task, dataset, self.cache_dir, self.bf16, progress, self.log)
            if pre_info:
                atomic_write_json(self.run_dir / "pretrain.json", {k: v for k, v in pre_info.items()})
            return self._online(agent, nets, dataset, pre_info, checkpoint_path, resume, progress)

    def _online(self, agent, nets, dataset, pre_info: dict, checkpoint_path: Path, resume: bool,
                progress: Progress) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        cfg, task, oc = self.config, self.task, self.config.online
        if nets is not None:
            from spaars_robot.train.pretrain import normalized_offline_buffer

            offline = normalized_offline_buffer(dataset, nets)
            normalize, reward_scale = nets.normalizer, float(nets.reward_scale)
            support_threshold = float(nets.support_threshold)
            offline_ratio = oc.offline_ratio
        else:
            offline = ReplayBuffer(1, task.obs_dim, task.action_dim)
            normalize, reward_scale, support_threshold, offline_ratio = (lambda x: x), 1.0, float("inf"), 0.0
        support_measured = nets is not None  # the support score needs the dataset's CVAE
        online = ReplayBuffer(max(oc.env_steps, 1), task.obs_dim, task.action_dim)
        counters = {"raw": 0, "oos": 0, "falls": 0, "steps": 0, "episodes": 0}
        rows: list[dict] = []
        step, episode, wall_before = 0, 0, 0.0
        if resume:
            state = load_checkpoint(checkpoint_path)
            agent.load_state_dict(state["agent"])
            online.load_state_dict(state["online"])
            agent.generator.set_state(state["generator"])
            counters, rows = dict(state["counters"]), [dict(r) for r in state["rows"]]
            step, episode, wall_before = int(state["step"]), int(state["episode"]), float(state["wall"])
        writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=step if resume else None)
        self._write_metrics(rows)
        env = make_env(task)
        t_start = time.perf_counter()
        bar = progress.add_task(f"online {cfg.algo} {task.name} seed {cfg.seed}", total=oc.env_steps, completed=step)
        next_checkpoint = (step // cfg.eval.checkpoint_every + 1) * cfg.eval.checkpoint_every

        def wall() -> float:
            return wall_before + time.perf_counter() - t_start

        def do_eval() -> None:
            record = evaluate(agent, task, cfg.eval.episodes, cfg.eval.seed_base)
            recent = online.obs[max(0, online.size - RECENT_STATES): online.size]
            if recent.shape[0] == 0:
                recent = offline.obs[:RECENT_STATES]
            signals = agent.after_eval(step, record, recent)
            n = max(counters["steps"], 1)
            row = {"step": step, "phase": agent.phase, **{k: record[k] for k in METRIC_FIELDS if k in record},
                   "train_raw_rate": counters["raw"] / n,
                   "out_of_support_rate": counters["oos"] / n if support_measured else "",  # sac: no CVAE, n/a
                   "falls": counters["falls"], "train_episodes": counters["episodes"],
                   "novelty": signals.get("novelty", ""), "bc_error": signals.get("bc_error", ""),
                   "gate_rate_recent": signals.get("gate_rate_recent", ""), "q_scale": signals.get("q_scale", ""),
                   "adv_scale": signals.get("adv_scale", ""),
                   "wall_seconds": round(wall(), 1),
                   "env_steps_per_second": round(step / max(wall(), 1e-9), 1),  # online phase only
                   "event": signals.get("switched", "")}
            rows.append(row)
            oos = "n/a" if row["out_of_support_rate"] == "" else f"{row['out_of_support_rate']:.3f}"
            self.log(f"eval step {step} [{agent.phase}] normalised {row['normalized_mean']:.1f} "
                     f"raw {row['train_raw_rate']:.2f} oos {oos} falls {row['falls']} {row['event']}")
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "step":
                    writer.add_scalar(f"eval/{key}", value, step)
            self._write_metrics(rows)
            counters.update(raw=0, oos=0, falls=0, steps=0, episodes=0)

        if step == 0 and not rows:
            do_eval()  # the offline starting point
        obs, _ = env.reset(seed=cfg.seed * EPISODE_SEED_STRIDE + episode)
        agent.begin_episode()
        while step < oc.env_steps:
            action, source = agent.explore(obs)
            if not np.isfinite(action).all():
                raise TrainingDiverged(f"{cfg.algo} produced a non-finite action at online step {step} (its networks "
                                       f"hold NaN/inf); {checkpoint_path.name} keeps the last finite state, but a "
                                       "resume replays the same steps: change the config (e.g. a lower lr)")
            score = agent.support_score(obs, action)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            online.add(normalize(torch.as_tensor(obs, dtype=torch.float32)), action, float(reward) * reward_scale,
                       normalize(torch.as_tensor(next_obs, dtype=torch.float32)), terminated)
            obs = next_obs
            step += 1
            counters["steps"] += 1
            counters["raw"] += source == "raw"
            counters["oos"] += score > support_threshold
            for _ in range(oc.utd):
                metrics = agent.update(mixed_batch(offline, online, oc.batch_size, offline_ratio, agent.generator))
            if step % cfg.eval.every == 0:
                for key, value in metrics.items():
                    writer.add_scalar(key, float(value), step)
                do_eval()
                progress.update(bar, completed=step, description=(
                    f"online {cfg.algo} {task.name} seed {cfg.seed} [{agent.phase}] "
                    f"score={rows[-1]['normalized_mean']:.1f}"))
            if terminated or truncated:
                counters["falls"] += bool(terminated)
                counters["episodes"] += 1
                episode += 1
                if step >= next_checkpoint or step >= oc.env_steps:
                    atomic_torch_save(checkpoint_path, {
                        "agent": agent.state_dict(), "online": online.state_dict(),
                        "generator": agent.generator.get_state(), "counters": counters, "rows": rows,
                        "step": step, "episode": episode, "wall": wall()})
                    next_checkpoint = (step // cfg.eval.checkpoint_every + 1) * cfg.eval.checkpoint_every
                obs, _ = env.reset(seed=cfg.seed * EPISODE_SEED_STRIDE + episode)
                agent.begin_episode()
        if rows[-1]["step"] != step:
            do_eval()  # env_steps not a multiple of eval.every: the final policy is still evaluated
        env.close()
        writer.close()
        atomic_torch_save(checkpoint_path, {
            "agent": agent.state_dict(), "online": online.state_dict(), "generator": agent.generator.get_state(),
            "counters": counters, "rows": rows, "step": step, "episode": episode, "wall": wall()})
        summary = self._summary(rows, agent, pre_info)
        atomic_write_json(self.run_dir / "summary.json", summary)
        return summary

    def _write_metrics(self, rows: list[dict]) -> None:
        tmp = self.run_dir / "metrics.csv.tmp"
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.run_dir / "metrics.csv")

    def _summary(self, rows: list[dict], agent, pre_info: dict) -> dict:
        cfg = self.config
        last = (rows[1:] or rows)[-5:]  # the last 5 online evaluations (the offline start is not one of them)
        early = [r for r in rows[1:] if r["step"] <= min(50_000, cfg.online.env_steps)]
        early_steps = sum(cfg.eval.every for _ in early) or 1
        return {
            "task": cfg.task, "algo": cfg.algo, "seed": cfg.seed, "protocol": cfg.protocol,
            "dataset": str(self.dataset_path), "bf16": self.bf16,
            "variant": {"concurrent_bc": cfg.online.concurrent_bc, "hard_switch": cfg.online.hard_switch},
            **({"tag": cfg.tag, "tag_sets": cfg.tag_sets} if cfg.tag else {}),
            "final_normalized": float(np.mean([r["normalized_mean"] for r in last])),
            "offline_normalized": rows[0]["normalized_mean"],
            "early_out_of_support_rate": (float(sum(r["out_of_support_rate"] * cfg.eval.every for r in early)
                                                / early_steps) if all(r["out_of_support_rate"] != "" for r in early)
                                           else None),
            "early_falls": int(sum(r["falls"] for r in early)),
            "switch": getattr(agent, "switch_log", []),
            "pretrain_updates_per_second": pre_info.get("updates_per_second"),
            "pretrain_cache_hit": pre_info.get("cache_hit"),
            "wall_seconds": rows[-1]["wall_seconds"],
            "curve": [{k: r[k] for k in ("step", "phase", "normalized_mean", "train_raw_rate", "eval_raw_rate",
                                         "out_of_support_rate", "falls")} for r in rows],
            "config": cfg.model_dump(mode="json"),
        }
