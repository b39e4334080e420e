"""Observation normalisation fixed from the offline dataset; part of every exported graph."""
from __future__ import annotations

import torch
from torch import nn


class ObsNormalizer(nn.Module):
    """(obs - mean) / std with std floored, stored as buffers so checkpoints and ONNX graphs carry it."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-3) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone().float())
        self.register_buffer("std", std.clone().float().clamp_min(eps))

    @classmethod
    def identity(cls, dim: int) -> ObsNormalizer:
        return cls(torch.zeros(dim), torch.ones(dim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.mean) / self.std
