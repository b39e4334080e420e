"""Plain MLPs and a batched-ensemble MLP that runs E members in one bmm per layer."""
from __future__ import annotations

import math

import torch
from torch import nn


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, layer_norm: bool = False) -> nn.Sequential:
    """ReLU MLP; LayerNorm after each hidden layer when asked (RLPD/SUPE critics use it for stability)."""
    layers: list[nn.Module] = []
    last = in_dim
    for width in hidden:
        layers.append(nn.Linear(last, width))
        if layer_norm:
            layers.append(nn.LayerNorm(width))
        layers.append(nn.ReLU())
        last = width
    layers.append(nn.Linear(last, out_dim))
    return nn.Sequential(*layers)


def forward_fp32_head(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """`net(x)` with its last layer in fp32 even under a bf16 autocast (`online.update_precision: bf16`).

    Why: value outputs are read as differences -- the gate's advantage of raw over latent was ~3e-4 of |Q| on hopper,
    TD errors, IQL's Q - V -- and bf16 keeps ~3 significant digits, so a bf16 head would round the signal away. The
    hidden layers, where the FLOPs are, may run in bf16; without an autocast this is exactly `net(x)`."""
    *body, head = net
    for layer in body:
        x = layer(x)
    if not torch.is_autocast_enabled(x.device.type):
        return head(x)
    with torch.autocast(x.device.type, enabled=False):
        return head(x.float())


class EnsembleLinear(nn.Module):
    """E independent linear layers evaluated with one batched matmul: x [E, B, in] -> [E, B, out]."""

    def __init__(self, ensemble_size: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)  # same init as nn.Linear, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    """E MLPs with identical shapes and independent weights; input [B, in] or [E, B, in], output [E, B, out]."""

    def __init__(
        self, ensemble_size: int, in_dim: int, hidden: tuple[int, ...], out_dim: int, layer_norm: bool = False
    ) -> None:
        super().__init__()
        self.ensemble_size = ensemble_size
        layers: list[nn.Module] = []
        last = in_dim
        for width in hidden:
            layers.append(EnsembleLinear(ensemble_size, last, width))
            if layer_norm:
                layers.append(nn.LayerNorm(width))
            layers.append(nn.ReLU())
            last = width
        layers.append(EnsembleLinear(ensemble_size, last, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.ensemble_size, -1, -1)
        return forward_fp32_head(self.net, x)
