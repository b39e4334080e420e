"""H-step chunks of consecutive transitions that never cross an episode end, from the dataset and the online replay.

SUPE's high level acts once per H env steps, so its transitions are chunks: (s_0, the chunk's actions, the
discounted sum of its rewards, s_H, whether it terminated). Both buffers store per-step transitions in time order
(the runner's one replay), so a chunk is H consecutive indices; a start is valid when no episode ends before the
chunk's last step (an episode may end *at* the last step: a terminal chunk, or a time-limit cut).
"""
from __future__ import annotations

import torch

from spaars_robot.data.replay import ReplayBuffer


def online_chunk_starts(replay: ReplayBuffer, horizon: int) -> torch.Tensor:
    """Valid chunk starts of the online replay (filled in order, never wrapped: its capacity is the budget)."""
    n = replay.size
    if n < horizon:
        return torch.zeros(0, dtype=torch.long, device=replay.device)
    ends = (replay.done[:n] > 0) | replay.truncated[:n]
    # ends among steps t .. t+H-2 (the chunk's first H-1 steps) must be none
    cum = torch.cat([torch.zeros(1, device=replay.device), ends.float().cumsum(0)])
    starts = torch.arange(0, n - horizon + 1, device=replay.device)
    inside = cum[starts + horizon - 1] - cum[starts]
    return starts[inside == 0]


def gather_chunks(buffer: ReplayBuffer, starts: torch.Tensor, horizon: int, gamma: float) -> dict[str, torch.Tensor]:
    """Chunks [B, H, ...] at `starts` plus their high-level transition: discounted reward sum, s_H and done.

    A chunk ends at its first terminal step (none can come earlier than the last, by the starts' validity, but a
    dataset marks terminals only), so `done` is the last step's and `next_obs` the last step's next state.
    """
    idx = starts.unsqueeze(1) + torch.arange(horizon, device=starts.device).unsqueeze(0)
    reward = buffer.reward[idx]
    discounts = gamma ** torch.arange(horizon, dtype=reward.dtype, device=reward.device)
    return {"obs": buffer.obs[idx], "action": buffer.action[idx], "reward": reward,
            "chunk_reward": (reward * discounts).sum(1), "next_obs": buffer.next_obs[idx[:, -1]],
            "done": buffer.done[idx[:, -1]]}


def sample_starts(starts: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    if starts.numel() == 0:
        raise ValueError("no chunk fits: every episode is shorter than the chunk horizon")
    pick = torch.randint(0, starts.numel(), (count,), generator=generator, device=starts.device)
    return starts[pick]


def mixed_chunk_batch(offline: ReplayBuffer, offline_starts: torch.Tensor, online: ReplayBuffer, horizon: int,
                      gamma: float, batch_size: int, offline_ratio: float, generator: torch.Generator,
                      online_start_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """`offline_ratio` of the chunks from the dataset, the rest from the online replay (all from the dataset while
    the replay holds no whole chunk): SUPE's 50/50 high-level batches. `online_start_mask` [capacity] keeps only
    the replay starts it marks (SUPE: where the high level chose a skill). The batch says where each chunk came
    from: `online` [B] and `start` [B], its first index in its own buffer."""
    online_starts = online_chunk_starts(online, horizon)
    if online_start_mask is not None:
        online_starts = online_starts[online_start_mask[online_starts]]
    n_off = batch_size if online_starts.numel() == 0 else round(batch_size * offline_ratio)
    starts = [sample_starts(offline_starts, n_off, generator)]
    parts = [gather_chunks(offline, starts[0], horizon, gamma)]
    if batch_size > n_off:
        starts.append(sample_starts(online_starts, batch_size - n_off, generator))
        parts.append(gather_chunks(online, starts[1], horizon, gamma))
    batch = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
    batch["start"] = torch.cat(starts)
    batch["online"] = torch.arange(batch_size, device=offline.device) >= n_off
    return batch
