"""A gate that predicts raw-minus-latent return differences from the fitted states nearest to the query, less a
decision margin (raw where the output is positive).

Nadaraya-Watson regression: the prediction is the mean of the fitted states' measured differences, weighted by a
Gaussian kernel of their distance to the query (features standardised with the fitted set's mean and sd, kept as
buffers so the graph applies the same units at the robot). Why a kernel and not k hard nearest neighbours: a hard
kNN prediction jumps where the k-th and (k+1)-th neighbours swap, so float32 rounding in onnxruntime and torch
picked different neighbours near such ties and the exported gate disagreed with the trained one (parity error 0.23
on a smoke run whose fitted states nearly repeat); the kernel is continuous in the features. The bandwidth plays
k's part (algos/rollout_gate.py picks it by cross-validation, from the k-th-neighbour distances of the fitted set).
Distances from broadcast differences (not |x|^2 - 2 x.p + |p|^2, which cancels far from the fitted states), weights
by a softmax (max-subtracted), so the ONNX exporter traces a fixed graph and a query
far from every fitted state still gets its nearest states' mean, not 0/0. `reference_predict` is the same
prediction in float64 numpy, which tests hold the module to.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

# A feature that hardly varies over the fitted states (a joint that never moved) carries no ranking, but
# standardised by its own tiny sd its float32 rounding noise became distances of order 1 and the exported gate's output moved by 2.5 % of its range between onnxruntime and torch (smoke run).
# Every feature is O(1) here (normalised observations, actions in [-1, 1] and their gap), so spreads
# below 0.1 are floored to it (normalised observations spread ~1 over the data, actions ~0.3).
SD_FLOOR = 0.1


class NeighbourGate(nn.Module):
    def __init__(self, features: torch.Tensor, values: torch.Tensor, bandwidth: float, offset: float = 0.0) -> None:
        super().__init__()
        if features.ndim != 2 or values.shape != (features.shape[0],):
            raise ValueError(f"features [N, F] and values [N] expected, got {tuple(features.shape)} and "
                             f"{tuple(values.shape)}")
        if not bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
        features = features.to(torch.float32)
        mean, sd = features.mean(0), features.std(0, unbiased=False).clamp_min(SD_FLOOR)
        points = (features - mean) / sd
        self.register_buffer("fitted", features)  # as measured: what a gate file stores
        self.register_buffer("mean", mean)
        self.register_buffer("sd", sd)
        self.register_buffer("points", points)
        self.register_buffer("values", values.to(torch.float32))
        self.bandwidth = float(bandwidth)
        self.offset = float(offset)  # the decision margin: the gate says raw where prediction - offset > 0

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # float64 inside: a query far from every fitted state (hundreds of sds away: the parity check's random
        # observations) has kernel logits of order 1e4, whose float32 rounding moved the prediction by ~1e-3 of the
        # fitted values' range, more than the export's parity tolerance; the features themselves stay float32
        x = (features.double() - self.mean.double()) / self.sd.double()
        distances = (x.unsqueeze(1) - self.points.double().unsqueeze(0)).pow(2).sum(-1)
        weights = torch.softmax(-distances / (2.0 * self.bandwidth ** 2), dim=1)
        return (weights @ self.values.double() - self.offset).to(features.dtype)

    def payload(self) -> dict:
        """What a gate file stores: enough to rebuild the module exactly (`from_payload`)."""
        return {"features": self.fitted.clone(), "values": self.values.clone(), "bandwidth": self.bandwidth,
                "offset": self.offset}

    @classmethod
    def from_payload(cls, payload: dict) -> NeighbourGate:
        return cls(torch.as_tensor(payload["features"]), torch.as_tensor(payload["values"]),
                   float(payload["bandwidth"]), float(payload["offset"]))

    @classmethod
    def constant(cls, features: torch.Tensor, raw: bool) -> NeighbourGate:
        """A gate that always says raw (or always latent): what the fit deploys when no state-dependent gate beat
        both constant choices in cross-validation. Same graph, so export and serving need no second form."""
        return cls(features, torch.full((features.shape[0],), 1.0 if raw else -1.0), bandwidth=1.0)


def standardise(train_x: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Every array in the training set's units (the module's buffers hold the same mean and sd)."""
    mean, sd = train_x.mean(0), np.maximum(train_x.std(0), SD_FLOOR)
    return [(a - mean) / sd for a in (train_x, *others)]


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(b), len(a)] squared Euclidean distances (float64: the expanded form is exact enough here)."""
    return np.maximum((b * b).sum(1)[:, None] - 2 * b @ a.T + (a * a).sum(1)[None], 0.0)


def reference_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, bandwidth: float) -> np.ndarray:
    """The module's prediction in float64 numpy."""
    a, b = standardise(train_x, test_x)
    logits = -squared_distances(a, b) / (2.0 * bandwidth ** 2)
    weights = np.exp(logits - logits.max(1, keepdims=True))
    return (weights / weights.sum(1, keepdims=True)) @ train_y


def neighbour_bandwidth(train_x: np.ndarray, k: int) -> float:
    """The median distance from a fitted state to its k-th nearest other fitted state: a kernel of this width
    averages over about the k nearest states, as a kNN regressor with that k would."""
    (a,) = standardise(train_x)
    distances = np.sqrt(squared_distances(a, a))
    np.fill_diagonal(distances, np.inf)
    k = min(k, len(a) - 1)
    return float(np.median(np.partition(distances, k - 1, axis=1)[:, k - 1])) + 1e-6
