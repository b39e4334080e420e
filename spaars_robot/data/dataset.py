"""The one in-memory view every algorithm trains on.

Transitions follow D4RL's `qlearning_dataset` semantics: `done` is the termination flag only, so a
time-limit cut still bootstraps. Because the Minari layout keeps each episode's final observation,
no transition is dropped at a timeout (D4RL had to drop it). Trajectory chunks of length H (for
OPAL/SUPE skills) are windows that never cross an episode boundary, addressed by start index.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from spaars_robot.data.episodes import Episode, iter_episodes, read_metadata
from spaars_robot.errors import DatasetError

if TYPE_CHECKING:
    from spaars_robot.config.tasks import TaskSpec


@dataclass
class OfflineDataset:
    obs: torch.Tensor  # [N, obs_dim]
    action: torch.Tensor  # [N, act_dim]
    reward: torch.Tensor  # [N]
    next_obs: torch.Tensor  # [N, obs_dim]
    done: torch.Tensor  # [N] 1.0 where the episode terminated (not truncated)
    episode_start: np.ndarray  # [E] index of each episode's first transition
    episode_length: np.ndarray  # [E]
    episode_return: np.ndarray  # [E]
    metadata: dict

    @classmethod
    def from_episodes(cls, episodes: list[Episode], metadata: dict | None = None) -> OfflineDataset:
        lengths = np.array([len(ep) for ep in episodes], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        cat = lambda xs: torch.from_numpy(np.concatenate(xs))  # noqa: E731
        return cls(
            obs=cat([ep.observations[:-1] for ep in episodes]).float(),
            action=cat([ep.actions for ep in episodes]).float(),
            reward=cat([ep.rewards for ep in episodes]).float(),
            next_obs=cat([ep.observations[1:] for ep in episodes]).float(),
            done=cat([ep.terminations.astype(np.float32) for ep in episodes]),
            episode_start=starts,
            episode_length=lengths,
            episode_return=np.array([ep.episode_return for ep in episodes]),
            metadata=metadata or {},
        )

    @classmethod
    def load(cls, path: Path | str) -> OfflineDataset:
        return cls.from_episodes(list(iter_episodes(path)), read_metadata(path))

    def __len__(self) -> int:
        return self.obs.shape[0]

    def check_fits(self, task: TaskSpec) -> None:
        """Refuse a dataset recorded on another task before any compute is spent on it.

        Shapes alone do not tell tasks apart (walker2d and halfcheetah are both 17 x 6), so the recorded
        environment id and D4RL reference scores are compared as well when the dataset carries them.
        """
        problems = []
        if (self.obs_dim, self.action_dim) != (task.obs_dim, task.action_dim):
            problems.append(f"shapes obs {self.obs_dim} / action {self.action_dim}, task expects "
                            f"{task.obs_dim} / {task.action_dim}")
        env_id = self.metadata.get("spaars_env_id")
        if env_id and task.backend == "gymnasium" and env_id != task.env_id:
            problems.append(f"recorded on {env_id}, task runs {task.env_id}")
        for key in ("ref_min_score", "ref_max_score"):
            recorded = self.metadata.get(key)
            if recorded is not None and abs(float(recorded) - getattr(task, key)) > 1e-6 * max(1.0, abs(recorded)):
                problems.append(f"{key} {recorded} vs the task's {getattr(task, key)}")
        if problems:
            name = self.metadata.get("dataset_id", "dataset")
            raise DatasetError(f"{name} does not fit task {task.name!r}: " + "; ".join(problems))

    @property
    def obs_dim(self) -> int:
        return self.obs.shape[1]

    @property
    def action_dim(self) -> int:
        return self.action.shape[1]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"obs": self.obs, "action": self.action, "reward": self.reward,
                "next_obs": self.next_obs, "done": self.done}

    def chunk_starts(self, horizon: int) -> torch.Tensor:
        """Start indices t such that t..t+H-1 lie in one episode (an H-step chunk)."""
        valid = [np.arange(s, s + n - horizon + 1) for s, n in zip(self.episode_start, self.episode_length)
                 if n >= horizon]
        return torch.from_numpy(np.concatenate(valid) if valid else np.zeros(0, np.int64))

    def chunks(self, starts: torch.Tensor, horizon: int) -> dict[str, torch.Tensor]:
        """Gather H-step chunks [B, H, ...] for the given start indices (no materialised copy of all chunks)."""
        idx = starts.unsqueeze(1) + torch.arange(horizon).unsqueeze(0)
        return {"obs": self.obs[idx], "action": self.action[idx], "reward": self.reward[idx],
                "done": self.done[idx], "next_obs": self.next_obs[idx]}

    def observation_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.obs.mean(0), self.obs.std(0)
