"""The one in-memory view every algorithm trains on.

Transitions follow D4RL's `qlearning_dataset` semantics: `done` is the termination flag only, so a
time-limit cut still bootstraps. Because the Minari layout keeps each episode's final observation,
no transition is dropped at a timeout (D4RL had to drop it). Trajectory chunks of length H (for
OPAL/SUPE skills) are windows that never cross an episode boundary, addressed by start index.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spaars_robot.data.episodes import Episode, iter_episodes, read_metadata


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
    def from_episodes(cls, episodes: list[Episode], metadata: dict | None = None) -> "OfflineDataset":
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
    def load(cls, path: Path | str) -> "OfflineDataset":
        return cls.from_episodes(list(iter_episodes(path)), read_metadata(path))

    def __len__(self) -> int:
        return self.obs.shape[0]

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
