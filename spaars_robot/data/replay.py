"""Preallocated replay storage: one tensor per field, sampling by index with a seeded generator.

Used for the online buffer and (read-only) for the offline dataset, so a 50/50 mixed batch is two
index gathers and a cat, with no per-step Python copies. `truncated` (time-limit ends) is stored but never
sampled: learning needs only `done` (a timeout is not a terminal), a dataset made from the buffer
(medium-replay) needs both to split episodes. The storage lives on the run's device (`train --device`), so a
sampled batch is already where the networks are; the generator must be of the same device.
"""
from __future__ import annotations

import torch

FIELDS = ("obs", "action", "reward", "next_obs", "done")


class ReplayBuffer:
    def __init__(self, capacity: int, obs_dim: int, action_dim: int, device: torch.device | str = "cpu") -> None:
        self.capacity = capacity
        self.device = torch.device(device)
        self.obs = torch.zeros(capacity, obs_dim, device=device)
        self.action = torch.zeros(capacity, action_dim, device=device)
        self.reward = torch.zeros(capacity, device=device)
        self.next_obs = torch.zeros(capacity, obs_dim, device=device)
        self.done = torch.zeros(capacity, device=device)
        self.truncated = torch.zeros(capacity, dtype=torch.bool, device=device)
        self.size = 0
        self.cursor = 0

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> ReplayBuffer:
        """A full buffer holding `tensors`, on their device."""
        n = tensors["obs"].shape[0]
        buf = cls(n, tensors["obs"].shape[1], tensors["action"].shape[1], tensors["obs"].device)
        for name in FIELDS:
            getattr(buf, name).copy_(tensors[name])
        buf.size = buf.cursor = n
        return buf

    def add(self, obs, action, reward: float, next_obs, done: bool, truncated: bool = False) -> None:
        i = self.cursor
        self.truncated[i] = bool(truncated)
        self.obs[i] = torch.as_tensor(obs)
        self.action[i] = torch.as_tensor(action)
        self.reward[i] = reward
        self.next_obs[i] = torch.as_tensor(next_obs)
        self.done[i] = float(done)
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.size, (batch_size,), generator=generator, device=self.device)
        return {name: getattr(self, name)[idx] for name in FIELDS}

    def state_dict(self) -> dict:
        n = self.size
        return {"size": n, "cursor": self.cursor, "truncated": self.truncated[:n].clone(),
                **{name: getattr(self, name)[:n].clone() for name in FIELDS}}

    def load_state_dict(self, state: dict) -> None:
        n = state["size"]
        for name in FIELDS:
            getattr(self, name)[:n] = state[name]
        if "truncated" in state:  # absent in checkpoints written before it was stored
            self.truncated[:n] = state["truncated"]
        self.size, self.cursor = n, state["cursor"]


def mixed_batch(
    offline: ReplayBuffer, online: ReplayBuffer, batch_size: int, offline_ratio: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """RLPD/SUPE symmetric sampling: `offline_ratio` of the batch from the dataset, the rest online.

    Rows [0, online_from) are offline and [online_from, B) online (RND trains on the online rows).
    """
    n_off = int(round(batch_size * offline_ratio)) if online.size > 0 else batch_size
    n_on = batch_size - n_off
    if n_on == 0:
        return {**offline.sample(batch_size, generator), "online_from": batch_size}
    if n_off == 0:
        return {**online.sample(batch_size, generator), "online_from": 0}
    a, b = offline.sample(n_off, generator), online.sample(n_on, generator)
    return {**{name: torch.cat([a[name], b[name]]) for name in FIELDS}, "online_from": n_off}
