"""Make offline datasets the way D4RL did: train a SAC behaviour policy to a quality level, then roll
it out stochastically.

One SAC run per (task, seed) serves every quality: `medium` is the first evaluation that reaches the
task's target score, `expert` the best evaluation in the budget, `medium-replay` the replay buffer up
to the medium point, `medium-expert` the concatenation of the medium and expert datasets. `mixed` (kitchen, D4RL's kitchen-mixed) is
rolled out by a scripted controller instead of a learned one (train/scripted_kitchen.py); `diverse` (antmaze, D4RL's
antmaze-*-diverse) by a scripted goal-reaching Ant (train/scripted_ant.py; or a kept `ant-goal` SAC actor) steered
along maze waypoints (train/maze_waypoints.py).

Under a safety spec (`data collect --safety-spec hopper`) the behaviour policy trains, is evaluated and is rolled out
through the same SafetyLayer that `serve` runs (train/safety_in_loop.py), and the dataset stores the *applied* actions:
the data then lives inside the limits a deployed policy will meet, which is what a policy cloned or decoded from it
needs (BENCHMARKS "Trained under the spec": 47 % of the unconstrained hopper-medium's steps, 87 % of walker2d's,
command torques the soft zone bends, so a CVAE fitted to them emits actions the layer changes). Such a dataset is
named `<task>-<quality>-safe-v0` (the task's own spec) or `<task>-<quality>-safe-<spec>-v0`, and its behaviour run and
rollout shards live apart from the unconstrained ones, keyed by the spec's SHA-256, so a changed spec never resumes
work made under other limits.

Everything is resumable and deterministic: training checkpoints are written at episode boundaries
(each episode resets from a seed derived from its index), rollouts are written in shards of whole
episodes, and the dataset directory appears only when complete. Behaviour-policy checkpoints are kept,
so a dataset can be regenerated bit-identically from (policy checkpoint, seed).
"""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import gymnasium as gym
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from spaars_robot.algos.sac import SAC, SACConfig
from spaars_robot.config.tasks import DEFAULT_DATASET_STEPS, TaskSpec
from spaars_robot.data.episodes import Episode, dataset_dir, iter_episodes, write_dataset
from spaars_robot.data.files import atomic_torch_save, atomic_write_json, safe_torch_load, sha256_file
from spaars_robot.data.replay import ReplayBuffer
from spaars_robot.envs import env_spec, make_env
from spaars_robot.envs.evaluation import run_episodes
from spaars_robot.errors import SpaarsError
from spaars_robot.export.safety_binding import spec_path
from spaars_robot.train.online_loop import EPISODE_SEED_STRIDE, OnlineLoop, StepInfo
from spaars_robot.train.progress import ProgressDisplay, make_progress
from spaars_robot.train.safety_in_loop import resolve_training_spec, spec_env_factory

Quality = Literal["random", "medium", "expert", "medium-replay", "medium-expert", "mixed", "diverse"]
NAMESPACE = "spaars"
EVAL_SEED_BASE = 900_000_000


class CollectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(DEFAULT_DATASET_STEPS, gt=0, description="transitions in the rolled-out dataset "
                       "(`data collect` passes the task's D4RL size)")
    seed: int = Field(0, ge=0)
    train_budget: int = Field(1_000_000, gt=0, description="max SAC env steps for the behaviour policy")
    random_steps: int = Field(5_000, ge=0, description="uniform-action warm-up before SAC updates")
    eval_every: int = Field(10_000, gt=0, description="env steps between deterministic evaluations")
    eval_episodes: int = Field(5, gt=0)
    checkpoint_every: int = Field(10_000, gt=0, description="env steps between resumable checkpoints")
    shard_steps: int = Field(50_000, gt=0, description="rollout transitions per resumable shard")
    sac: SACConfig = SACConfig()


@dataclass(frozen=True)
class Limits:
    """The safety spec a collection runs under (none: `file` is None): where its environments come from, and the
    names that keep its dataset, behaviour run and shards apart from unconstrained ones."""

    task: TaskSpec
    file: str | None = None
    sha256: str | None = None

    @classmethod
    def of(cls, task: TaskSpec, given: str | None) -> Limits:
        """`--safety-spec given` (a name under safety/ or a path; None or `none`: no layer), checked against the task."""
        if given is None:
            return cls(task)
        file, sha = resolve_training_spec(task, given)
        return cls(task, file, sha)

    @property
    def name_suffix(self) -> str:
        """'' | '-safe' (the task's own spec) | '-safe-<spec stem>'."""
        if self.file is None:
            return ""
        own = spec_path(self.task.name)
        return "-safe" if own.exists() and Path(self.file).resolve() == own.resolve() else f"-safe-{Path(self.file).stem}"

    @property
    def work_suffix(self) -> str:
        """The name suffix plus the spec's hash: work made under other bytes of the spec is never resumed."""
        return "" if self.sha256 is None else f"{self.name_suffix}-{self.sha256[:12]}"

    def make_env(self) -> Callable[[], gym.Env]:
        return spec_env_factory(self.task, self.file)

    def metadata(self) -> dict:
        return {} if self.file is None else {"spaars_safety_spec": Path(self.file).name,
                                             "spaars_safety_spec_sha256": self.sha256}


def dataset_id(task: TaskSpec, quality: str, limits: Limits | None = None) -> str:
    return f"{NAMESPACE}/{task.name}-{quality}{limits.name_suffix if limits else ''}-v0"


def behaviour_dir(root: Path, task: TaskSpec, seed: int, limits: Limits | None = None) -> Path:
    return Path(root) / NAMESPACE / "_behaviour" / f"{task.name}{limits.work_suffix if limits else ''}-seed{seed}"


def evaluate_behaviour(sac: SAC, task: TaskSpec, episodes: int,
                       make: Callable[[], gym.Env] | None = None) -> dict:
    """How a behaviour policy is scored, trained here or kept: deterministic actions on the fixed evaluation seeds
    (under the collection's safety layer when it has one: its quality is what it scores as it will act)."""
    returns, _ = run_episodes(sac.act, task, episodes, EVAL_SEED_BASE, make=make)
    return {"return_mean": float(np.mean(returns)),
            "normalized": float(np.mean([task.normalized_score(r) for r in returns]))}


class BehaviourRun:
    """A resumable SAC run whose evaluations define the medium and expert behaviour policies."""

    def __init__(self, root: Path, task: TaskSpec, config: CollectConfig, progress: ProgressDisplay | None,
                 limits: Limits | None = None) -> None:
        self.task, self.config, self.progress = task, config, progress
        self.limits = limits if limits is not None else Limits(task)
        self.dir = behaviour_dir(root, task, config.seed, self.limits)
        # the spec is read once: a file edited mid-run must not change the limits under the hash the run is keyed by
        self.make_env = self.limits.make_env()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / "state.pt"
        self.sac = SAC(task.obs_dim, task.action_dim, config.sac, seed=config.seed,
                       random_steps=config.random_steps)
        self.replay = ReplayBuffer(config.train_budget, task.obs_dim, task.action_dim)
        self.step = 0
        self.episode = 0
        self.evals: list[dict] = []
        self.medium_step: int | None = None
        if self.state_path.exists():
            self._load()

    # -- persistence -------------------------------------------------------------------------------
    def _save(self) -> None:
        atomic_torch_save(self.state_path, {
            "sac": self.sac.state_dict(), "replay": self.replay.state_dict(), "step": self.step, "episode": self.episode,
            "medium_step": -1 if self.medium_step is None else self.medium_step, "evals": self.evals,
        })
        atomic_write_json(self.dir / "evals.json", self.evals)

    def _load(self) -> None:
        state = safe_torch_load(self.state_path)
        self.sac.load_state_dict(state["sac"])
        self.replay.load_state_dict(state["replay"])
        if "truncated" in state:  # written beside the replay before the buffer stored it itself
            self.replay.truncated[: self.replay.size] = state["truncated"]
        self.step, self.episode = int(state["step"]), int(state["episode"])
        self.sac.explore_steps = self.step  # absent from checkpoints written before SAC counted it
        self.medium_step = None if int(state["medium_step"]) < 0 else int(state["medium_step"])
        # evals live in state.pt (one atomic write with the step they belong to); evals.json is for humans
        # and the fallback for checkpoints written before evals were stored in state.pt
        evals_path = self.dir / "evals.json"
        evals = state["evals"] if "evals" in state else (
            json.loads(evals_path.read_text()) if evals_path.exists() else [])
        self.evals = [e for e in evals if e["step"] <= self.step]

    def policy_path(self, step: int) -> Path:
        return self.dir / f"policy_step{step:07d}.pt"

    # -- training ----------------------------------------------------------------------------------
    def _evaluate(self) -> dict:
        record = {"step": self.step, **evaluate_behaviour(self.sac, self.task, self.config.eval_episodes,
                                                          self.make_env)}
        self.evals.append(record)
        atomic_torch_save(self.policy_path(self.step), self.sac.actor.state_dict())
        return record

    def train_until(self, quality: Literal["medium", "expert"]) -> None:
        """Train until the medium target is reached (quality=medium) or the budget is spent (expert)."""
        cfg, task = self.config, self.task
        target = task.quality["medium"].target_normalized if "medium" in task.quality else None
        if quality == "medium" and self.medium_step is not None:
            return
        if self.step >= cfg.train_budget:  # budget spent (also medium that never reached its target)
            return
        bar = self.progress.add_task(f"SAC behaviour {task.name} (to {quality})", total=cfg.train_budget,
                                     completed=self.step) if self.progress else None
        next_checkpoint = (self.step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
        stop = False
        t0, steps0 = time.perf_counter(), self.step
        loop = OnlineLoop(self.make_env(), self.sac, self.replay,
                          lambda: self.replay.sample(cfg.sac.batch_size, self.sac.generator),
                          seed=cfg.seed, update_after=cfg.random_steps)
        loop.step, loop.episode = self.step, self.episode

        def on_step(info: StepInfo) -> bool:
            nonlocal stop
            self.step = info.step
            if info.step % cfg.eval_every == 0:
                record = self._evaluate()
                if target is not None and self.medium_step is None and record["normalized"] >= target:
                    self.medium_step = info.step
                stop = (quality == "medium" and self.medium_step is not None) or info.step >= cfg.train_budget
                if bar is not None:
                    self.progress.update(bar, completed=info.step, description=(
                        f"SAC behaviour {task.name} (to {quality}) eval={record['normalized']:.1f} "
                        f"{(info.step - steps0) / (time.perf_counter() - t0):.0f} steps/s"))
            elif bar is not None:
                self.progress.update(bar, completed=info.step)
            return False  # a reached target stops at the end of the episode, never inside it

        def on_episode_end(info: StepInfo) -> bool:
            nonlocal next_checkpoint
            if not (info.terminated or info.truncated):  # cut by the budget: a time limit, not a fall
                self.replay.truncated[self.replay.size - 1] = True
            self.episode = loop.episode
            done = stop or info.step >= cfg.train_budget
            if info.step >= next_checkpoint or done:
                self._save()
                next_checkpoint = (info.step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
            return done

        loop.run(cfg.train_budget, on_step, on_episode_end, end_episode_at_until=True)
        loop.env.close()

    def chosen_step(self, quality: Literal["medium", "expert"]) -> int:
        """The evaluation whose policy makes the dataset.

        SAC's curve can jump past the medium band between two evaluations (hopper on one CPU went 29.8 -> 93.8 in
        10k steps): the first evaluation at the target would then label an expert policy `medium`. The band is the
        task's definition of the quality, so an overshoot falls back to the kept in-band checkpoint nearest the
        target, and a run with none in band is refused rather than mislabelled.
        """
        if not self.evals:
            raise SpaarsError(f"behaviour run {self.dir} has no evaluations yet")
        if quality == "medium" and self.medium_step is not None:
            spec = self.task.quality["medium"]
            low, high = spec.band
            first = next(e for e in self.evals if e["step"] == self.medium_step)
            if first["normalized"] <= high:
                return self.medium_step
            in_band = [e for e in self.evals if low <= e["normalized"] <= high and e["step"] <= self.medium_step]
            if not in_band:
                curve = ", ".join(f"{e['step']}: {e['normalized']:.1f}" for e in self.evals)
                raise SpaarsError(
                    f"behaviour run {self.dir} jumped past the medium band {list(spec.band)} without an evaluation "
                    f"inside it (step: normalised score = {curve}); remove {self.dir} and collect again with a smaller "
                    "--eval-every, or use another --seed")
            return min(in_band, key=lambda e: abs(e["normalized"] - spec.target_normalized))["step"]
        # expert, or medium that never reached its target: the best evaluation so far
        return max(self.evals, key=lambda e: e["normalized"])["step"]

    def replay_episodes(self, up_to: int) -> list[Episode]:
        """The replay buffer's first `up_to` transitions as episodes (D4RL medium-replay)."""
        n = min(up_to, self.replay.size)
        obs, act = self.replay.obs[:n].numpy(), self.replay.action[:n].numpy()
        rew, nxt = self.replay.reward[:n].numpy(), self.replay.next_obs[:n].numpy()
        term, trunc = self.replay.done[:n].numpy() > 0.5, self.replay.truncated[:n].numpy().copy()
        trunc[n - 1] |= not term[n - 1]
        ends = np.flatnonzero(term | trunc)
        episodes, start = [], 0
        for end in ends:
            sl = slice(start, end + 1)
            episodes.append(Episode(np.concatenate([obs[sl], nxt[end:end + 1]]), act[sl], rew[sl], term[sl], trunc[sl]))
            start = end + 1
        return episodes


def _complete_shards(shard_dir: Path) -> list[Path]:
    """Finished shards only: a `shard_*.tmp.npz` left by a kill mid-write also matches `shard_*.npz`."""
    return sorted(p for p in shard_dir.glob("shard_*.npz") if not p.name.endswith(".tmp.npz"))


class Behaviour(Protocol):
    """What rolls a dataset out: may choose the episode's reset options, is told when it starts, and is asked for
    one action per observation.

    Every random draw comes from the episode's generator, so an episode depends only on its seed. Behaviours
    subclass it to inherit the defaults: no reset options, nothing to set up per episode."""

    def reset_options(self, generator: torch.Generator) -> dict | None:
        return None

    def begin_episode(self, generator: torch.Generator) -> None:
        return None

    def act(self, obs: np.ndarray, generator: torch.Generator) -> np.ndarray: ...


class UniformBehaviour(Behaviour):
    """Uniform random actions in [-1, 1] (D4RL's random datasets)."""

    def __init__(self, action_dim: int) -> None:
        self.action_dim = action_dim

    def act(self, obs: np.ndarray, generator: torch.Generator) -> np.ndarray:
        return (torch.rand(1, self.action_dim, generator=generator) * 2 - 1)[0].numpy()


class ActorBehaviour(Behaviour):
    """A SAC actor's stochastic actions (the medium and expert behaviour policies)."""

    def __init__(self, actor: torch.nn.Module) -> None:
        self.actor = actor

    def act(self, obs: np.ndarray, generator: torch.Generator) -> np.ndarray:
        with torch.no_grad():
            return self.actor.sample(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0), generator)[0][0].numpy()


def scripted_behaviour(task: TaskSpec) -> Behaviour:
    """The scripted controller of a task that has one (`mixed` quality): today FrankaKitchen-v1's."""
    from spaars_robot.train.scripted_kitchen import ENV_ID, ScriptedKitchen

    if task.env_id != ENV_ID:
        raise SpaarsError(f"quality 'mixed' needs a scripted controller; there is one for {ENV_ID} only, "
                          f"task {task.name!r} is {task.env_id}")
    env = make_env(task)
    try:
        return ScriptedKitchen(task, env.unwrapped.model)
    finally:
        env.close()


def kept_actor(task: TaskSpec, path: Path, config: CollectConfig,
               make: Callable[[], gym.Env] | None = None) -> tuple[torch.nn.Module, dict]:
    """A SAC actor kept from an earlier behaviour run (`_behaviour/<task>-seed<N>/policy_step*.pt`) instead of a SAC
    run here: hours of SAC (the goal-reaching Ant's several 100k steps) become seconds, and the rollout is the one
    that training would give from the same checkpoint. It is evaluated as a freshly trained one is, so the
    dataset's metadata says how good it is, beside its SHA-256."""
    path = Path(path)
    if not path.is_file():
        raise SpaarsError(f"behaviour policy {path}: no such file")
    sac = SAC(task.obs_dim, task.action_dim, config.sac, seed=config.seed)
    try:
        sac.actor.load_state_dict(safe_torch_load(path))
    except Exception as exc:  # a damaged or foreign file, or another task's actor (size mismatch)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpaarsError(f"behaviour policy {path} is not a SAC actor of task {task.name} ({task.obs_dim} "
                          f"observation dims, {task.action_dim} action dims): {first}") from exc
    normalized = evaluate_behaviour(sac, task, config.eval_episodes, make)["normalized"]
    return sac.actor, {"spaars_behaviour_checkpoint": str(path), "spaars_behaviour_sha256": sha256_file(path),
                       "spaars_behaviour_eval_normalized": normalized}


def maze_behaviour(task: TaskSpec, config: CollectConfig, kept: Path | None = None) -> tuple[Behaviour, dict]:
    """antmaze-*-diverse's behaviour: a goal-reaching Ant driven along the task's maze waypoints -- the scripted gait
    (train/scripted_ant.py), or a `kept` SAC actor of the `ant-goal` task; with the metadata that says which."""
    from spaars_robot.config.tasks import load_task
    from spaars_robot.train.maze_waypoints import GOAL_TASK, ActorWalker, MazeWaypointBehaviour
    from spaars_robot.train.scripted_ant import ScriptedAntWalker

    MazeWaypointBehaviour.maze_of(task)  # refuse a task without a maze before anything else
    if kept is not None:
        actor, kept_facts = kept_actor(load_task(GOAL_TASK), kept, config)
        return MazeWaypointBehaviour(task, ActorWalker(actor)), {
            "spaars_behaviour": f"{GOAL_TASK} SAC policy on maze waypoints (train/maze_waypoints.py)"} | kept_facts
    walker = ScriptedAntWalker()
    return MazeWaypointBehaviour(task, walker), {
        "spaars_behaviour": "scripted Ant gait on maze waypoints (train/scripted_ant.py, train/maze_waypoints.py)",
        "spaars_behaviour_action_noise": walker.action_noise}


def rollout(task: TaskSpec, behaviour: Behaviour, steps: int, seed: int, shard_dir: Path,
            shard_steps: int, progress: ProgressDisplay | None,
            make: Callable[[], gym.Env] | None = None) -> list[Episode]:
    """Roll out `steps` transitions of `behaviour` (in `make()`'s env; default the task's, no safety layer).

    The stored action is the one the simulator executed: under a safety layer its `applied_action`, not the command.

    Shards of whole episodes are written atomically, so a killed rollout resumes at its last shard;
    each episode's reset seed and action noise depend only on (seed, episode index), which is what
    makes regeneration and resumption bit-identical.
    """
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards = _complete_shards(shard_dir)
    episodes: list[Episode] = []
    for shard in shards:
        with np.load(shard) as z:
            for i in range(len(z["lengths"])):
                episodes.append(Episode(z[f"obs_{i}"], z[f"act_{i}"], z[f"rew_{i}"], z[f"term_{i}"],
                                        z[f"trunc_{i}"], int(z["seeds"][i])))
    done_steps = sum(len(e) for e in episodes)
    env = make() if make is not None else make_env(task)
    bar = progress.add_task(f"rollout {task.name}", total=steps, completed=done_steps) if progress else None
    pending: list[Episode] = []

    def flush() -> None:
        if not pending:
            return
        payload = {"lengths": np.array([len(e) for e in pending]), "seeds": np.array([e.seed for e in pending])}
        for i, e in enumerate(pending):
            payload |= {f"obs_{i}": e.observations, f"act_{i}": e.actions, f"rew_{i}": e.rewards,
                        f"term_{i}": e.terminations, f"trunc_{i}": e.truncations}
        index = len(_complete_shards(shard_dir))
        tmp = shard_dir / f"shard_{index:05d}.tmp.npz"
        np.savez(tmp, **payload)
        tmp.replace(shard_dir / f"shard_{index:05d}.npz")
        pending.clear()

    pending_steps = 0
    while done_steps < steps:
        ep_index = len(episodes)
        ep_seed = seed * EPISODE_SEED_STRIDE + ep_index
        generator = torch.Generator().manual_seed(ep_seed)
        obs, _ = env.reset(seed=ep_seed, options=behaviour.reset_options(generator))
        behaviour.begin_episode(generator)
        observations, actions, rewards, terms, truncs = [obs], [], [], [], []
        while True:
            action = behaviour.act(obs, generator)
            obs, reward, terminated, truncated, info = env.step(action)
            applied = info.get("applied_action", action)
            observations.append(obs); actions.append(applied); rewards.append(reward)  # noqa: E702
            cut = done_steps + len(rewards) >= steps
            terms.append(terminated); truncs.append(truncated or (cut and not terminated))  # noqa: E702
            if terminated or truncated or cut:
                break
        ep = Episode(np.asarray(observations, np.float32), np.asarray(actions, np.float32),
                     np.asarray(rewards, np.float32), np.asarray(terms), np.asarray(truncs), ep_seed)
        episodes.append(ep)
        pending.append(ep)
        done_steps += len(ep)
        pending_steps += len(ep)
        if bar is not None:
            progress.update(bar, completed=done_steps)
        if pending_steps >= shard_steps:
            flush()
            pending_steps = 0
    flush()
    env.close()
    return episodes


KEPT_POLICY_QUALITIES = ("medium", "expert", "diverse")  # rolled out from one actor; medium-replay needs the replay


def collect(task: TaskSpec, quality: Quality, root: Path, config: CollectConfig, threads: int = 2,
            behaviour_policy: Path | None = None, safety_spec: str | None = None) -> Path:
    """Produce `<root>/spaars/<task>-<quality>[-safe...]-v0` (resuming any interrupted work) and return its path.

    `behaviour_policy`: a kept SAC actor (`kept_actor`) rolled out instead of training one; for `diverse`, the
    goal-reaching Ant's. `safety_spec`: collect under that spec's SafetyLayer (`Limits`); None: without one."""
    torch.set_num_threads(threads)
    root = Path(root)
    limits = Limits.of(task, safety_spec)
    make = limits.make_env()
    if behaviour_policy is not None and quality not in KEPT_POLICY_QUALITIES:
        raise SpaarsError(f"a kept behaviour policy makes {', '.join(KEPT_POLICY_QUALITIES)} datasets; '{quality}' "
                          "is made from " + ("the SAC run's replay buffer" if quality == "medium-replay" else
                                             "no learned policy" if quality in ("random", "mixed") else
                                             "two datasets: collect medium and expert first"))
    out = dataset_dir(root, dataset_id(task, quality, limits))
    if (out / "data" / "metadata.json").exists():
        made_under = json.loads((out / "data" / "metadata.json").read_text()).get("spaars_safety_spec_sha256")
        if made_under != limits.sha256:
            raise SpaarsError(f"{out} was made under safety spec sha256 {str(made_under)[:12]}..., and "
                              f"{limits.file} is now {str(limits.sha256)[:12]}...: restore the spec, or move the "
                              "dataset away to collect it again under the new limits")
        return out
    if quality in ("medium", "expert", "random", "mixed", "diverse") and quality not in task.quality:
        raise SpaarsError(f"task {task.name} defines no '{quality}' quality target in its YAML")
    t_start = time.perf_counter()
    work = root / NAMESPACE / "_work" / f"{task.name}-{quality}{limits.work_suffix}-seed{config.seed}"
    extra: dict = {"spaars_quality": quality, "spaars_seed": config.seed, "spaars_task": task.name,
                   **limits.metadata()}
    with make_progress() as progress:
        if quality == "medium-expert":
            parts = [collect(task, q, root, config, threads, safety_spec=safety_spec) for q in ("medium", "expert")]
            episodes = [ep for p in parts for ep in iter_episodes(p)]
            extra["spaars_sources"] = [str(p) for p in parts]
        elif quality == "random":
            episodes = rollout(task, UniformBehaviour(task.action_dim), config.steps, config.seed, work,
                               config.shard_steps, progress, make)
        elif quality == "diverse":
            behaviour, facts = maze_behaviour(task, config, behaviour_policy)
            extra |= facts
            episodes = rollout(task, behaviour, config.steps, config.seed + 1, work, config.shard_steps, progress,
                               make)
        elif quality == "mixed":
            episodes = rollout(task, scripted_behaviour(task), config.steps, config.seed, work, config.shard_steps,
                               progress, make)
            extra["spaars_behaviour"] = "scripted (train/scripted_kitchen.py)"
        elif behaviour_policy is not None:
            actor, facts = kept_actor(task, behaviour_policy, config, make)
            extra |= facts
            episodes = rollout(task, ActorBehaviour(actor), config.steps, config.seed + 1, work, config.shard_steps,
                               progress, make)
        else:
            run = BehaviourRun(root, task, config, progress, limits)
            base = "medium" if quality == "medium-replay" else quality
            run.train_until(base)  # type: ignore[arg-type]
            step = run.chosen_step(base)  # type: ignore[arg-type]
            record = next(e for e in run.evals if e["step"] == step)
            extra |= {"spaars_behaviour_step": step, "spaars_behaviour_eval_normalized": record["normalized"],
                      "spaars_behaviour_checkpoint": str(run.policy_path(step))}
            if quality == "medium-replay":
                episodes = run.replay_episodes(step)
            else:
                run.sac.actor.load_state_dict(safe_torch_load(run.policy_path(step)))
                episodes = rollout(task, ActorBehaviour(run.sac.actor), config.steps, config.seed + 1, work,
                                   config.shard_steps, progress, make)
    extra["spaars_collection_seconds"] = round(time.perf_counter() - t_start, 1)
    write_dataset(out, episodes, dataset_id=dataset_id(task, quality, limits), obs_dim=task.obs_dim,
                  action_dim=task.action_dim, env_id=task.env_id if task.backend == "gymnasium" else None,
                  ref_min_score=task.ref_min_score, ref_max_score=task.ref_max_score, extra_metadata=extra,
                  env_spec=env_spec(task))
    shutil.rmtree(work, ignore_errors=True)
    return out
