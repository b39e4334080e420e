"""The rollout-supervised gate: fitted to branched-simulator ground truth instead of a TD critic (issue 16).

Why: every critic-based gate measured on this project's runs ranked raw against latent no better than a constant
gate (BENCHMARKS.md, "Advantage gate" and "Issue 16"), while the ground truth that scores them -- branch the
simulator at a state, execute the raw or the latent action, follow the deployed policy for H steps with common
random numbers (train/branching.py) -- is available in simulation for as many states as one pays for. This fits a
gate to that truth: at a deployed state it predicts the measured H-step return difference (raw minus latent) of
the fitted states nearest to it (a Gaussian kernel over about k neighbours, nn/neighbour_gate.py) and opens where
the prediction is positive.

What the gate sees is what the robot has (`gate_features`): the normalised observation, both actions and their gap.
k (the kernel's width) is chosen by sign accuracy on the significant states, cross-validated over whole
episodes (states of one episode are correlated: splitting them would leak the answer), and the best constant gate
is cross-validated the same way, so the fit says whether the state carried anything a constant did not.
A nearest-neighbour regressor because that was the best of the predictors tried on this truth
(benchmarks/gate_learnability.py: hard kNN; ridge regression ranked below it) and needs no training loop.
"""
from __future__ import annotations

import numpy as np
import torch

from spaars_robot.nn.neighbour_gate import NeighbourGate, neighbour_bandwidth, reference_predict

NEIGHBOURS = (5, 15, 45)


def gate_features(obs: torch.Tensor, raw: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """[B, obs + 3 act] from normalised observations [B, obs] and both actions [B, act].

    Not the critic's advantages, though the robot has them too: they ranked raw against latent at chance on every
    run measured, and as differences of two float32 Q values of order 100 their rounding moved the exported gate's
    output by ~1 % of its range between onnxruntime and torch (a smoke run), where these features agree to ~1e-6."""
    return torch.cat([obs, raw, latent, raw - latent], 1)


def episode_folds(episodes: np.ndarray, folds: int) -> np.ndarray:
    """Fold index per state, whole episodes per fold, episodes dealt round-robin in order of first appearance."""
    order = list(dict.fromkeys(episodes.tolist()))
    fold_of = {episode: i % folds for i, episode in enumerate(order)}
    return np.array([fold_of[e] for e in episodes.tolist()])


def sign_hits(prediction: np.ndarray, truth: np.ndarray, significant: np.ndarray) -> tuple[int, int]:
    """(right, scored): significant states where 'raw if prediction > 0' matches the sign of the truth."""
    right = (prediction[significant] > 0) == (truth[significant] > 0)
    return int(right.sum()), int(significant.sum())


def cross_validated(predict, x: np.ndarray, y: np.ndarray, significant: np.ndarray, fold: np.ndarray) -> dict:
    """Out-of-fold predictions of `predict(x_train, y_train, significant_train, x_test)`, scored on the significant
    states: {"right", "scored", "sign_accuracy"}."""
    prediction = np.zeros(len(y))
    for f in np.unique(fold):
        train, test = fold != f, fold == f
        prediction[test] = predict(x[train], y[train], significant[train], x[test])
    right, scored = sign_hits(prediction, y, significant)
    return {"right": right, "scored": scored, "sign_accuracy": right / scored if scored else None}


def constant_prediction(y: np.ndarray, significant: np.ndarray, count: int) -> np.ndarray:
    """The best constant gate on a training set: the majority sign of its significant truth (latent on a tie)."""
    raw_better = (y[significant] > 0).mean() > 0.5 if significant.any() else False
    return np.full(count, 1.0 if raw_better else -1.0)


def fit_neighbour_gate(x: np.ndarray, y: np.ndarray, significant: np.ndarray, episodes: np.ndarray,
                       folds: int = 5, neighbours: tuple[int, ...] = NEIGHBOURS) -> tuple[NeighbourGate, dict]:
    """The gate on all states with the bandwidth of best cross-validated sign accuracy, and the cross-validation
    record. Candidate bandwidths: for each k in `neighbours`, the width that averages over about k fitted states
    (nn/neighbour_gate.neighbour_bandwidth), computed inside each fold from its training states alone.

    x: gate features per state, y: mean measured difference, significant: the paired test rejected "no difference",
    episodes: which episode each state came from. Needs at least `folds` episodes."""
    if len(np.unique(episodes)) < folds:
        raise ValueError(f"{len(np.unique(episodes))} episodes for {folds} folds: collect more states")
    fold = episode_folds(episodes, folds)
    usable = [k for k in neighbours if k < len(y) - max(np.bincount(fold))]  # every fold's training set holds k
    if not usable:
        raise ValueError(f"{len(y)} states: too few for k = {min(neighbours)} neighbours")

    def kernel(k: int):
        return lambda a, b, _s, c: reference_predict(a, b, c, neighbour_bandwidth(a, k))

    scores = {k: cross_validated(kernel(k), x, y, significant, fold) for k in usable}
    best = max(usable, key=lambda k: (scores[k]["sign_accuracy"] or 0.0, -k))  # ties: the narrower kernel
    constant = cross_validated(lambda a, b, s, c: constant_prediction(b, s, len(c)), x, y, significant, fold)
    bandwidth = neighbour_bandwidth(x, best)
    gate = NeighbourGate(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32), bandwidth)
    record = {"k": best, "bandwidth": bandwidth, "folds": folds,
              "cross_validated": {str(k): v for k, v in scores.items()},
              "constant_cross_validated": constant,
              "constant_on_all": "raw" if constant_prediction(y, significant, 1)[0] > 0 else "latent"}
    return gate, record
