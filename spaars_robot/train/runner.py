"""The runner owns the loop (rsl_rl style): pretraining (cached), online steps, evaluation, logging and
exact-resume checkpoints, for every algorithm. It talks to algorithms only through the agent contract
(algos/base.Agent) and what their builder returned (train/agents.BuiltAgent).

Run directory:  config.yaml  metrics.csv  tb/ (tb/pretrain/)  checkpoint.pt  pretrain.json  summary.json  train.log
A checkpoint is written at the first episode boundary after every `eval.checkpoint_every` env steps and
holds networks, optimisers, generator state, online replay, phase/gate/transition state, counters and
metrics rows; each training episode resets from a seed derived from its index (train/online_loop.py), so
a run resumed after kill -9 replays exactly what the uninterrupted run would have done.

Everything runs on `config.device` (`train --device`; nn/device.py). A checkpoint records its device; a resume
on another device loads everything (checkpoints are read to the CPU, then copied into place) but cannot continue
the random stream of another kind of generator, so it says so in train.log and is no longer exact.
"""
from __future__ import annotations

import csv
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from spaars_robot.algos.base import Agent
from spaars_robot.algos.transition import TRANSITION_SIGNALS
from spaars_robot.config.tasks import TaskSpec, load_task
from spaars_robot.config.training import TrainConfig
from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.data.files import atomic_torch_save, atomic_write_json, safe_torch_load
from spaars_robot.data.replay import ReplayBuffer, mixed_batch
from spaars_robot.envs.evaluation import run_episodes
from spaars_robot.envs.maze import MazeGeometry
from spaars_robot.errors import SpaarsError
from spaars_robot.nn.device import resolve_device, set_generator_state
from spaars_robot.safety.data_check import describe as describe_spec_on_data
from spaars_robot.safety.data_check import spec_on_data
from spaars_robot.safety.spec import load_safety_spec
from spaars_robot.train.agents import BuiltAgent, build_agent
from spaars_robot.train.gate_map import GateMapRecorder
from spaars_robot.train.online_loop import OnlineLoop, StepInfo
from spaars_robot.train.progress import ProgressDisplay, make_progress
from spaars_robot.train.safety_in_loop import check_unchanged, env_factory
from spaars_robot.train.scalars import ScalarLog

RECENT_STATES = 2_000
METRIC_FIELDS = (
    "step", "phase", "return_mean", "return_std", "normalized_mean", "normalized_std", "eval_raw_rate",
    "train_raw_rate", "out_of_support_rate", "falls", "train_episodes", "novelty", "bc_error",
    "gate_rate_recent", "q_scale", "adv_scale", "adv_mean", "wall_seconds", "env_steps_per_second", "event",
)
CHECKPOINT_KEYS = {"agent", "online", "generator", "counters", "rows", "step", "episode", "wall"}


def load_checkpoint(path: Path) -> dict:
    """A run's checkpoint.pt, or a clear error naming it (it is never modified or removed here)."""
    try:
        state = safe_torch_load(path)
        missing = CHECKPOINT_KEYS - set(state)
    except Exception as exc:  # torch.load raises many types (pickle, zip, EOF, RuntimeError) on a damaged file
        raise SpaarsError(f"{path}: checkpoint unreadable ({type(exc).__name__}: {exc}); it was left as it is. "
                          "Restore it from a copy, or move it away to restart the run from step 0") from exc
    if missing:
        raise SpaarsError(f"{path}: not a training checkpoint (missing {sorted(missing)}); it was left as it is")
    return state


def evaluate(agent: Agent, task: TaskSpec, episodes: int, seed_base: int, make=None) -> dict:
    """Deterministic episodes on fixed seeds shared by every algorithm and training seed."""
    returns, raw_rate = run_episodes(agent.act, task, episodes, seed_base,
                                     begin_episode=lambda: agent.begin_episode(evaluation=True), make=make)
    norm = [task.normalized_score(r) for r in returns]
    return {"return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
            "normalized_mean": float(np.mean(norm)), "normalized_std": float(np.std(norm)),
            "eval_raw_rate": raw_rate, "episode_returns": returns}


@dataclass
class Counters:
    """Training-step counts since the last evaluation (reported per evaluation window, then cleared)."""

    raw: int = 0
    oos: int = 0
    falls: int = 0
    steps: int = 0
    episodes: int = 0

    def clear(self) -> None:
        self.raw = self.oos = self.falls = self.steps = self.episodes = 0


FINAL_EVALUATIONS = 5  # a run's "final" score is the mean of its last 5 online evaluations


class Runner:
    def __init__(self, config: TrainConfig, run_dir: Path, cache_dir: Path, dataset_path: Path | None,
                 bf16: bool = False, show_progress: bool = True, command: str = "",
                 precision: dict | None = None) -> None:
        self.config, self.run_dir, self.cache_dir = config, Path(run_dir), Path(cache_dir)
        self.command = command or " ".join(["spaars-robot", *sys.argv[1:]])
        self.dataset_path, self.bf16, self.show_progress = dataset_path, bf16, show_progress
        self.precision = precision or {"requested": "bf16" if bf16 else "fp32", "chosen": "bf16" if bf16 else "fp32"}
        self.task = load_task(config.task)
        self.checkpoint_path = self.run_dir / "checkpoint.pt"
        self.make_env = env_factory(config, self.task)  # under the run's safety spec, if it has one

    def log(self, message: str) -> None:
        """One line per pretraining checkpoint and evaluation in `train.log` (seeds run without a progress bar)."""
        with open(self.run_dir / "train.log", "a") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {message}\n")

    def _write_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        payload = self.config.model_dump(mode="json") | {"dataset_path": str(self.dataset_path), "bf16": self.bf16,
                                                         "precision": self.precision, "command": self.command}
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(payload, sort_keys=False))

    def run(self, resume: bool = False) -> dict:
        cfg, task = self.config, self.task
        resolve_device(cfg.device)  # a recorded or --set cuda on a machine without a GPU: one clear line
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        if resume and not self.checkpoint_path.exists():
            raise SpaarsError(f"{self.run_dir}: no checkpoint.pt to resume from")
        if not resume and self.checkpoint_path.exists():
            raise SpaarsError(f"{self.run_dir} already holds a run; use --resume or another --run-dir")
        check_unchanged(cfg)
        self._write_config()
        dataset = OfflineDataset.load(self.dataset_path) if cfg.algo != "sac" else None
        if dataset is not None:
            dataset.check_fits(task)
        self.spec_on_data = self._spec_on_data(dataset)
        progress = make_progress(live=self.show_progress)  # several seeds: plain lines, never redrawn bars
        scalars = ScalarLog(self.run_dir, self._open_wandb())
        try:
            with progress:
                built = build_agent(cfg, task, dataset, self.cache_dir, self.bf16, progress, self.log,
                                    scalars=scalars.pretrain)
                if built.pretrain_info:
                    atomic_write_json(self.run_dir / "pretrain.json", dict(built.pretrain_info))
                    if built.pretrain_info.get("cache_hit"):  # computed by an earlier run: log its history now
                        scalars.pretrain_history(built.pretrain_info.get("history", []))
                return self._online(built, resume, progress, scalars)
        finally:
            scalars.close()

    def _spec_on_data(self, dataset: OfflineDataset | None) -> dict | None:
        """How much the run's safety spec changes the dataset's own actions (safety/data_check.py), logged."""
        if self.config.safety_spec is None or dataset is None:
            return None
        spec_file = Path(self.config.safety_spec)
        result = spec_on_data(load_safety_spec(spec_file), dataset.obs.numpy(), dataset.action.numpy(),
                              dataset.episode_start, dataset.episode_length)
        self.log(describe_spec_on_data(result, spec_file.name, str(dataset.metadata.get("dataset_id", "dataset"))))
        return result

    def _open_wandb(self):
        """The run's W&B run when it asked for one (`train --wandb`); wandb is imported only then."""
        if self.config.wandb is None:
            return None
        from spaars_robot.train.wandb_log import WandbRun

        return WandbRun(self.config.wandb, self.run_dir, f"{self.run_dir.parent.name}/{self.run_dir.name}",
                        self.config.model_dump(mode="json"))

    def _online(self, built: BuiltAgent, resume: bool, progress: ProgressDisplay, scalars: ScalarLog) -> dict:
        """Resume or start, evaluate the offline start, step the shared loop to `env_steps`, summarise."""
        session = OnlineSession(self, built, progress, scalars)
        if resume:
            session.restore(load_checkpoint(self.checkpoint_path))
        session.begin()
        if session.loop.step == 0 and not session.rows:
            session.evaluate()  # the offline starting point
        session.loop.run(self.config.online.env_steps, session.on_step, session.on_episode_end)
        if session.rows[-1]["step"] != session.loop.step:
            session.evaluate()  # env_steps not a multiple of eval.every: the final policy is still evaluated
        session.close()
        session.checkpoint()
        summary = self._summary(session.rows, built.agent, built.pretrain_info)
        if session.gate_map is not None:
            summary["gate_map"] = session.gate_map.summary()
        atomic_write_json(self.run_dir / "summary.json", summary)
        return summary

    def write_metrics(self, rows: list[dict]) -> None:
        tmp = self.run_dir / "metrics.csv.tmp"
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.run_dir / "metrics.csv")

    def _summary(self, rows: list[dict], agent: Agent, pre_info: dict) -> dict:
        cfg = self.config
        last = (rows[1:] or rows)[-FINAL_EVALUATIONS:]  # online evaluations only (not the offline start)
        early = [r for r in rows[1:] if r["step"] <= min(cfg.eval.early_steps, cfg.online.env_steps)]
        decisions = agent.run_summary()
        early_steps = sum(cfg.eval.every for _ in early) or 1
        return {
            "task": cfg.task, "algo": cfg.algo, "seed": cfg.seed, "protocol": cfg.protocol,
            "dataset": str(self.dataset_path), "bf16": self.bf16, "precision": self.precision, "device": cfg.device,
            "safety_spec": (None if cfg.safety_spec is None else
                            {"file": Path(cfg.safety_spec).name, "sha256": cfg.safety_spec_sha256,
                             **({"on_data": self.spec_on_data} if self.spec_on_data is not None else {})}),
            "variant": {"concurrent_bc": cfg.online.concurrent_bc, "hard_switch": cfg.online.hard_switch},
            **({"tag": cfg.tag, "tag_sets": cfg.tag_sets} if cfg.tag else {}),
            "final_normalized": float(np.mean([r["normalized_mean"] for r in last])),
            "offline_normalized": rows[0]["normalized_mean"],
            "early_out_of_support_rate": (float(sum(r["out_of_support_rate"] * cfg.eval.every for r in early)
                                                / early_steps) if all(r["out_of_support_rate"] != "" for r in early)
                                           else None),
            "early_falls": int(sum(r["falls"] for r in early)),
            "switch": decisions.get("switch", []),
            **({"transition": decisions["transition"]} if "transition" in decisions else {}),
            "pretrain_updates_per_second": pre_info.get("updates_per_second"),
            "pretrain_cache_hit": pre_info.get("cache_hit"),
            "wall_seconds": rows[-1]["wall_seconds"],
            "curve": [{**{k: r[k] for k in ("step", "phase", "normalized_mean", "train_raw_rate", "eval_raw_rate",
                                            "out_of_support_rate", "falls", "adv_mean") if k in r},
                       # what the transition rule read, so `transition replay` works on a compact summary too
                       **{k: r[k] for k in TRANSITION_SIGNALS if r.get(k, "") != ""}} for r in rows],
            "config": cfg.model_dump(mode="json"),
        }


class OnlineSession:
    """The state of one online run between checkpoints, and what happens at each point of the shared loop.

    The loop (train/online_loop.py) steps the simulator; this object counts what the steps did, evaluates on
    schedule, and checkpoints at episode boundaries. Everything a checkpoint holds is an attribute here.
    """

    def __init__(self, runner: Runner, built: BuiltAgent, progress: ProgressDisplay, scalars: ScalarLog) -> None:
        cfg, task, oc = runner.config, runner.task, runner.config.online
        self.runner, self.built, self.progress, self.scalars = runner, built, progress, scalars
        self.cfg, self.task = cfg, task
        self.online = ReplayBuffer(max(oc.env_steps, 1), task.obs_dim, task.action_dim, cfg.device)
        self.loop = OnlineLoop(runner.make_env(), built.agent, self.online, self._sample, seed=cfg.seed, utd=oc.utd,
                               encode=built.encode, reward_scale=built.reward_scale, support=built.support,
                               bf16_updates=oc.update_precision == "bf16")
        self.counters, self.rows, self.wall_before = Counters(), [], 0.0
        self.support_threshold = built.support.threshold if built.support is not None else float("inf")
        self.resumed = False
        maze = MazeGeometry.of_task(task)
        self.gate_map = (GateMapRecorder(maze, task.map.position_obs, oc.env_steps)
                         if maze is not None and oc.env_steps > 0 else None)

    def _sample(self) -> dict[str, torch.Tensor]:
        if self.built.sample is not None:  # the algorithm's own batch shape (SUPE's chunks), same replay
            return self.built.sample(self.online)
        oc = self.cfg.online
        return mixed_batch(self.built.offline, self.online, oc.batch_size, self.built.offline_ratio,
                           self.built.generator, oc.critic_nstep, oc.gamma)

    def restore(self, state: dict) -> None:
        self.built.agent.load_state_dict(state["agent"])
        self.online.load_state_dict(state["online"])
        saved_on = state.get("device", "cpu")  # absent in checkpoints written before --device
        if not set_generator_state(self.built.generator, state["generator"]) or saved_on != self.cfg.device:
            self.runner.log(f"resumed on {self.cfg.device} a checkpoint written on {saved_on}: networks, optimisers "
                            "and replay carried over, the random stream reseeded (not bit-identical to an "
                            "uninterrupted run)")
        self.counters, self.rows = Counters(**state["counters"]), [dict(r) for r in state["rows"]]
        self.loop.step, self.loop.episode = int(state["step"]), int(state["episode"])
        self.wall_before, self.resumed = float(state["wall"]), True
        if self.gate_map is not None and "gate_map" in state:  # absent: a run from before maps existed
            self.gate_map.load_state_dict(state["gate_map"])

    def begin(self) -> None:
        step = self.loop.step
        self.scalars.start_online(step, self.resumed)
        self.runner.write_metrics(self.rows)
        self.t_start = time.perf_counter()
        self.bar = self.progress.add_task(self.description(), total=self.cfg.online.env_steps, completed=step)
        every = self.cfg.eval.checkpoint_every
        self.next_checkpoint = (step // every + 1) * every

    def description(self) -> str:
        """What the progress display says: algorithm, task, seed, phase and the last evaluation's score."""
        text = f"online {self.cfg.algo} {self.task.name} seed {self.cfg.seed} [{self.built.agent.phase}]"
        return text + (f" score={self.rows[-1]['normalized_mean']:.1f}" if self.rows else "")

    def wall(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start

    # -- hooks of the shared loop ------------------------------------------------------------------------
    def on_step(self, info: StepInfo) -> bool:
        c = self.counters
        c.steps += 1
        c.raw += info.source == "raw"
        c.oos += info.support_score > self.support_threshold
        if self.gate_map is not None:
            self.gate_map.add(info.step, info.observation, info.source)
        if info.step % self.cfg.eval.every == 0:
            self.scalars.online(info.step, info.metrics or {})
            self.evaluate()
        self.progress.update(self.bar, completed=info.step)
        return False

    def on_episode_end(self, info: StepInfo) -> bool:
        self.counters.falls += info.terminated and self.runner.task.termination_is_failure  # not a reached goal
        self.counters.episodes += 1
        if info.step >= self.next_checkpoint or info.step >= self.cfg.online.env_steps:
            self.checkpoint()
            every = self.cfg.eval.checkpoint_every
            self.next_checkpoint = (info.step // every + 1) * every
        return False

    # -- evaluation, checkpoint ----------------------------------------------------------------------------
    def evaluate(self) -> None:
        """Evaluate the deployed policy, let the agent read its signals, record the row, clear the counters."""
        cfg, agent, c, step, wall = self.cfg, self.built.agent, self.counters, self.loop.step, self.wall()
        record = evaluate(agent, self.task, cfg.eval.episodes, cfg.eval.seed_base, self.runner.make_env)
        recent = self.online.obs[max(0, self.online.size - RECENT_STATES): self.online.size]
        if recent.shape[0] == 0:
            recent = self.built.offline.obs[:RECENT_STATES]
        signals = agent.after_eval(step, record, recent)
        n = max(c.steps, 1)
        row = {"step": step, "phase": agent.phase, **{k: record[k] for k in METRIC_FIELDS if k in record},
               "train_raw_rate": c.raw / n,
               "out_of_support_rate": c.oos / n if self.built.support is not None else "",  # no CVAE: n/a
               "falls": c.falls, "train_episodes": c.episodes,
               **{k: signals.get(k, "") for k in ("novelty", "bc_error", "gate_rate_recent", "q_scale", "adv_scale",
                                                     "adv_mean")},
               "wall_seconds": round(wall, 1),
               "env_steps_per_second": round(step / max(wall, 1e-9), 1),  # online phase only
               "event": signals.get("switched", "")}
        self.rows.append(row)
        oos = "n/a" if row["out_of_support_rate"] == "" else f"{row['out_of_support_rate']:.3f}"
        self.runner.log(f"eval step {step} [{row['phase']}] normalised {row['normalized_mean']:.1f} "
                        f"raw {row['train_raw_rate']:.2f} oos {oos} falls {row['falls']} {row['event']}")
        self.scalars.online(step, {f"eval/{key}": value for key, value in row.items()
                                   if isinstance(value, (int, float)) and key != "step"})
        self.runner.write_metrics(self.rows)
        self.progress.update(self.bar, completed=step, description=self.description())
        c.clear()

    def checkpoint(self) -> None:
        """The one checkpoint payload: everything `restore` needs to continue bit-identically."""
        atomic_torch_save(self.runner.checkpoint_path, {
            "agent": self.built.agent.state_dict(), "online": self.online.state_dict(),
            "generator": self.built.generator.get_state(), "counters": asdict(self.counters), "rows": self.rows,
            "step": self.loop.step, "episode": self.loop.episode, "wall": self.wall(), "device": self.cfg.device,
            **({"gate_map": self.gate_map.state_dict()} if self.gate_map is not None else {})})

    def close(self) -> None:
        self.loop.env.close()
