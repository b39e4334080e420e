"""Which agent `--algo` builds, and everything the runner needs around it (one registry, one place).

A builder returns a `BuiltAgent`: the agent (algos/base.Agent), the generator the runner draws batches
from (the one the agent samples with, so a run is one seeded stream), and the data view: the offline
buffer in the networks' input space, how to encode an observation and scale a reward for the online
buffer, and the support scorer. The runner uses these and the agent contract, nothing else.

Everything a builder returns lives on `config.device` (`train --device`): the networks, the agent's own tensors and
optimiser state, the offline buffer and the generator (nn/device.make_generator). tests/train/test_device.py
checks it for every registered algorithm.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spaars_robot.algos.base import Agent
from spaars_robot.algos.offline import OfflineNets, SupportScorer
from spaars_robot.algos.spar import RectifiedPolicy
from spaars_robot.config.tasks import TaskSpec
from spaars_robot.config.training import SKILL_ALGOS, TrainConfig
from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.data.replay import ReplayBuffer
from spaars_robot.nn.device import make_generator
from spaars_robot.train.online_loop import identity
from spaars_robot.train.progress import ProgressDisplay


@dataclass
class BuiltAgent:
    agent: Agent
    generator: torch.Generator
    offline: ReplayBuffer
    offline_ratio: float
    encode: Callable[[torch.Tensor], torch.Tensor] = identity
    reward_scale: float = 1.0
    support: SupportScorer | None = None  # None: no dataset CVAE, so out-of-support is not measured
    nets: OfflineNets | None = None  # what pretraining produced (for diagnostics); the runner never reads it
    pretrain_info: dict = field(default_factory=dict)
    # an algorithm whose updates take something other than per-step mixed batches (SUPE: H-step chunks) draws its
    # batches here from the offline buffer and the runner's online replay; None: the runner's mixed_batch
    sample: Callable[[ReplayBuffer], dict[str, torch.Tensor]] | None = None


def build_agent(config: TrainConfig, task: TaskSpec, dataset: OfflineDataset | None, cache_dir: Path,
                bf16: bool, progress: ProgressDisplay | None, log: Callable[[str], None] | None = None,
                scalars: Callable[[int, dict[str, float]], None] | None = None) -> BuiltAgent:
    """Pretrain (or load from cache) when the algorithm starts from data, then construct its agent.

    `scalars(step, losses)` receives pretraining's losses while it runs here (TensorBoard, W&B: train/scalars.py).
    """
    if config.algo == "sac":
        return _build_sac(config, task)
    from spaars_robot.train.pretrain import normalized_offline_buffer, pretrain_cached

    if dataset is None:
        raise ValueError(f"--algo {config.algo} needs a dataset")
    nets, info = pretrain_cached(dataset, config.pretrain, config.seed, cache_dir, bf16, progress, log,
                                 checkpoint_every=config.eval.checkpoint_every, device=config.device, scalars=scalars)
    offline = normalized_offline_buffer(dataset, nets)
    if config.algo in SKILL_ALGOS:
        return _build_supe(config, task, dataset, nets, offline, info, cache_dir, progress, log)
    rectified = None
    if uses_spar(config):
        from spaars_robot.train.spar_offline import spar_offline_cached

        rectified, spar_info = spar_offline_cached(nets, offline, config.spar, config.seed, Path(info["cache"]).stem,
                                                   cache_dir, progress, log, config.eval.checkpoint_every)
        info = {**info, "spar": spar_info}
        if config.algo == "td3bc":  # SPAR's anchor, freed and improved by TD3+BC's value gradient instead of LSI
            from spaars_robot.train.spar_offline import td3bc_offline_cached

            rectified, td3bc_info = td3bc_offline_cached(rectified, nets, offline, config.spar, config.online.alpha_bc,
                                                         config.seed, Path(spar_info["cache"]).stem, cache_dir, log)
            info = {**info, "td3bc": td3bc_info}
    generator = make_generator(config.seed + 12345, config.device)
    agent = DATA_AGENTS[config.algo](nets, config, generator, rectified)
    return BuiltAgent(agent=agent, generator=generator, offline=offline,
                      offline_ratio=config.online.offline_ratio, encode=nets.normalizer,
                      reward_scale=float(info["reward_scale"]),  # = nets.reward_scale, read without the device
                      support=SupportScorer(nets), nets=nets,
                      pretrain_info=info)


def _build_sac(config: TrainConfig, task: TaskSpec) -> BuiltAgent:
    from spaars_robot.algos.sac import SAC, SACConfig

    online = config.online
    sac_cfg = SACConfig(hidden=online.hidden, lr=online.lr, gamma=online.gamma, tau=online.tau,
                        batch_size=online.batch_size)
    generator = make_generator(config.seed, config.device)
    agent = SAC(task.obs_dim, task.action_dim, sac_cfg, config.seed, generator, random_steps=online.random_steps,
                device=config.device)
    return BuiltAgent(agent=agent, generator=generator,
                      offline=ReplayBuffer(1, task.obs_dim, task.action_dim, config.device), offline_ratio=0.0)


def _build_supe(config: TrainConfig, task: TaskSpec, dataset: OfflineDataset, nets: OfflineNets, offline: ReplayBuffer,
                info: dict, cache_dir: Path, progress: ProgressDisplay | None, log: Callable[[str], None] | None) -> BuiltAgent:
    """SUPE and SPAARS-SUPE: the skill VAE after the shared pretraining (cached), then the agent on chunk batches."""
    from spaars_robot.algos.spaars_supe import SPAARSSUPEAgent
    from spaars_robot.algos.supe import SUPEAgent
    from spaars_robot.data.chunks import mixed_chunk_batch
    from spaars_robot.train.skills_offline import label_offline_chunks, skills_cached

    cfg = config.supe
    starts = dataset.chunk_starts(cfg.horizon).to(offline.device)
    skills, skills_info = skills_cached(offline, starts, cfg, config.seed, Path(info["cache"]).stem, cache_dir,
                                        progress, log, config.eval.checkpoint_every)
    offline_reward = cfg.offline_reward if cfg.offline_reward != "auto" else (
        "min" if task.score == "success" else "model")  # SUPE: antmaze's minimum reward, kitchen's reward model
    generator = make_generator(config.seed + 12345, config.device)
    agent = (SPAARSSUPEAgent if config.algo == "spaars-supe" else SUPEAgent)(
        nets, skills, config, generator, offline_min_reward=float(dataset.reward.min()) * float(info["reward_scale"]),
        offline_labels=label_offline_chunks(skills, offline, starts, space=cfg.skill_space),
        offline_reward=offline_reward)
    online = config.online

    def sample(replay: ReplayBuffer) -> dict[str, torch.Tensor]:  # online: the high-level transitions that happened
        return mixed_chunk_batch(offline, starts, replay, cfg.horizon, online.gamma, cfg.batch_size,
                                 online.offline_ratio, generator, online_start_mask=agent.skill_started)

    return BuiltAgent(agent=agent, generator=generator, offline=offline, offline_ratio=online.offline_ratio,
                      encode=nets.normalizer, reward_scale=float(info["reward_scale"]), support=SupportScorer(nets),
                      nets=nets, pretrain_info={**info, "skills": {**skills_info, "offline_reward": offline_reward}},
                      sample=sample)


def agent_from_checkpoint(config: TrainConfig, task: TaskSpec, state: dict) -> tuple[Agent, OfflineNets]:
    """A data-driven run's agent rebuilt from its checkpoint's `agent` entry alone: no dataset, pretraining cache or
    SPAR stage is needed, because the checkpoint holds every network (what reads a finished run -- `gate fit` --
    must not rerun 30 minutes of pretraining whose result it then overwrites). Returns (agent, its nets)."""
    from spaars_robot.algos.spar import make_rectified

    if config.algo not in DATA_AGENTS:
        raise ValueError(f"--algo {config.algo} is not rebuilt from a checkpoint here")
    nets = OfflineNets(task.obs_dim, task.action_dim, config.pretrain).to(config.device)
    nets.load_state_dict(state["nets"])
    rectified = None
    if "spar" in state:
        rectified = make_rectified(task.obs_dim, task.action_dim, nets.latent_dim, config.spar).to(config.device)
        rectified.load_state_dict(state["spar"])
    agent = DATA_AGENTS[config.algo](nets, config, make_generator(config.seed + 12345, config.device), rectified)
    agent.load_state_dict(state)
    return agent, nets


def uses_spar(config: TrainConfig) -> bool:
    """Whether a run needs SPAR's rectified policy (its offline stages run after the shared pretraining)."""
    return config.algo in ("spar", "bc", "td3bc") or (config.algo in ("spaars", "raw") and config.online.raw_init == "spar")


def _iql(nets: OfflineNets, config: TrainConfig, generator: torch.Generator, rectified: RectifiedPolicy | None) -> Agent:
    from spaars_robot.algos.iql import IQLAgent

    return IQLAgent(nets, config, generator)


def _spaars(nets: OfflineNets, config: TrainConfig, generator: torch.Generator,
            rectified: RectifiedPolicy | None) -> Agent:
    """spaars, and its latent-only and raw fine-tuning baselines (same class, algos/spaars.py)."""
    from spaars_robot.algos.spaars import SPAARSAgent

    return SPAARSAgent(nets, config, generator, rectified)


def _spar(nets: OfflineNets, config: TrainConfig, generator: torch.Generator, rectified: RectifiedPolicy | None) -> Agent:
    """spar, bc (its frozen anchor alone: the behaviour-cloning baseline) and td3bc (the anchor freed and improved by
    TD3+BC's value gradient instead of LSI), algos/spar.py."""
    from spaars_robot.algos.spar import SPARAgent

    assert rectified is not None  # uses_spar() says so for these algorithms
    return SPARAgent(nets, config, generator, rectified)


DATA_AGENTS: dict[str, Callable[[OfflineNets, TrainConfig, torch.Generator, RectifiedPolicy | None], Agent]] = {
    "iql": _iql, "spaars": _spaars, "latent": _spaars, "raw": _spaars, "spar": _spar, "bc": _spar,
    "td3bc": _spar,
}
