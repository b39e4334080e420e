"""Observation normalisation fixed from the offline dataset; part of every exported graph."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from spaars_robot.config.ranges import ranges_problem


def kept_dims(ranges: Sequence[Sequence[int]] | None, dim: int) -> torch.Tensor:
    """A 0/1 float mask of the `dim` observation dims that `ranges` ([start, stop) pairs) keep; None keeps all."""
    keep = torch.ones(dim)
    if ranges is None:
        return keep
    problem = ranges_problem(ranges, dim)  # planning (train/jobs.py) already refused these with a one-line error
    if problem:
        raise ValueError(f"observation_dims {problem}")
    keep.zero_()
    for start, stop in ranges:
        keep[start:stop] = 1.0
    return keep


class ObsNormalizer(nn.Module):
    """(obs - mean) / std where `keep`, else 0; std floored; stored as buffers so checkpoints and ONNX graphs carry it.

    `keep` zeroes the dims no network may read (`PretrainConfig.observation_dims`): a zero input gets no weight
    gradient and adds nothing to a layer's output, so the networks learn exactly as on the truncated observation,
    while datasets, checkpoints and the served wire format keep the task's full observation.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-3,
                 keep: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone().float())
        self.register_buffer("std", std.clone().float().clamp_min(eps))
        self.register_buffer("keep", torch.ones_like(self.mean) if keep is None else keep.clone().float())

    @classmethod
    def identity(cls, dim: int) -> ObsNormalizer:
        return cls(torch.zeros(dim), torch.ones(dim))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # checkpoints and caches written before `keep` existed read every dim, which is what all-ones means
        if prefix + "mean" in state_dict and prefix + "keep" not in state_dict:
            state_dict[prefix + "keep"] = torch.ones_like(state_dict[prefix + "mean"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # where, not a product with the mask: NaN x 0 is NaN, and an ignored dim must not reach the networks at all
        return torch.where(self.keep > 0, (obs - self.mean) / self.std, torch.zeros((), dtype=obs.dtype))
