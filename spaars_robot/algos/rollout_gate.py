"""The rollout-supervised gate: fitted to branched-simulator ground truth instead of a TD critic (issue 16).

Why: every critic-based gate measured on this project's runs ranked raw against latent no better than a constant
gate (BENCHMARKS.md, "Advantage gate" and "Issue 16"), while the ground truth that scores them -- branch the
simulator at a state, execute the raw or the latent action, follow the deployed policy for H steps with common
random numbers (train/branching.py) -- is available in simulation for as many states as one pays for. This fits a
gate to that truth: at a deployed state it predicts the measured H-step return difference (raw minus latent) of
the fitted states nearest to it (a Gaussian kernel over about k neighbours, nn/neighbour_gate.py) and opens where
the prediction exceeds a margin.

What the gate sees is what the robot has (`gate_features`): the normalised observation, both actions and their gap.
The kernel's width and a decision margin are chosen by the return the decision adds over always-latent,
cross-validated over whole episodes (states of one episode are correlated: splitting them would leak the answer),
against the two constant gates cross-validated alike; if neither width beats both constants, the deployed gate is
the better constant. So in cross-validation on its own measured truth the fitted gate is no worse than the better of
raw and latent alone -- the claim SPAARS's gate exists for (whether that carries to episode returns is measured by
`spaars-robot gate fit`'s evaluation, not assumed).
A nearest-neighbour regressor because that was the best of the predictors tried on this truth
(benchmarks/gate_learnability.py: hard kNN; ridge regression ranked below it) and needs no training loop.
"""
from __future__ import annotations

import numpy as np
import torch

from spaars_robot.nn.neighbour_gate import NeighbourGate, neighbour_bandwidth, reference_predict

NEIGHBOURS = (5, 15, 45)
MARGINS = (0.0, 0.25, 0.5, 1.0)  # decision margins, in sds of the measured differences


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


def sign_record(prediction: np.ndarray, truth: np.ndarray, significant: np.ndarray) -> dict:
    """Significant states where 'raw if prediction > 0' has the truth's sign: {"right", "scored", "sign_accuracy"}."""
    right = int(((prediction[significant] > 0) == (truth[significant] > 0)).sum())
    scored = int(significant.sum())
    return {"right": right, "scored": scored, "sign_accuracy": right / scored if scored else None}


def out_of_fold(predict, x: np.ndarray, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Each state's prediction by `predict(x_train, y_train, x_test)` fitted on the other folds."""
    prediction = np.zeros(len(y))
    for f in np.unique(fold):
        train, test = fold != f, fold == f
        prediction[test] = predict(x[train], y[train], x[test])
    return prediction


def gain(says_raw: np.ndarray, y: np.ndarray) -> float:
    """Mean measured return a decision adds over always-latent, per state: y where it says raw, 0 where latent."""
    return float(np.where(says_raw, y, 0.0).mean())


def fit_neighbour_gate(x: np.ndarray, y: np.ndarray, significant: np.ndarray, episodes: np.ndarray,
                       folds: int = 5, neighbours: tuple[int, ...] = NEIGHBOURS,
                       margins: tuple[float, ...] = MARGINS) -> tuple[NeighbourGate, dict]:
    """The gate with the best cross-validated gain, and the record of every candidate.

    Candidates: always latent (gain 0), always raw (the mean difference), and a kernel gate per width (for each k in
    `neighbours`, the width that averages over about k fitted states, computed inside each fold from its training
    states) and margin (raw where the prediction exceeds `margin` x the differences' sd). Chosen by the mean return
    the decision adds over always-latent on held-out episodes, not by sign accuracy: a gate right on 70 % of the
    significant states can still lose return if its wrong 30 % are the costly ones (measured on walker2d seed 1: sign
    accuracy 0.68 on held-out states, 8 points below always-latent in score). A constant wins when nothing of the
    state beat it; the deployed gate is then that constant (NeighbourGate.constant). Sign accuracies at margin 0 are
    recorded beside the gains.

    x: gate features per state, y: mean measured difference, significant: the paired test rejected "no difference",
    episodes: which episode each state came from. Needs at least `folds` episodes."""
    if len(np.unique(episodes)) < folds:
        raise ValueError(f"{len(np.unique(episodes))} episodes for {folds} folds: collect more states")
    fold = episode_folds(episodes, folds)
    usable = [k for k in neighbours if k < len(y) - max(np.bincount(fold))]  # every fold's training set holds k
    if not usable:
        raise ValueError(f"{len(y)} states: too few for k = {min(neighbours)} neighbours")
    spread = float(y.std()) or 1.0
    predictions = {k: out_of_fold(lambda a, b, c, k=k: reference_predict(a, b, c, neighbour_bandwidth(a, k)), x, y, fold)
                   for k in usable}
    gains = {"always_latent": 0.0, "always_raw": gain(np.ones(len(y), dtype=bool), y)}
    for k in usable:
        for margin in margins:
            gains[f"k={k} margin={margin:g}"] = gain(predictions[k] > margin * spread, y)
    choice = max(gains, key=gains.get)  # first on ties: constants before kernels, narrow and small margins first
    record = {"choice": choice, "folds": folds, "difference_sd": spread, "cross_validated_gain": gains,
              "cross_validated_sign": {str(k): sign_record(predictions[k], y, significant) for k in usable}}
    gate, parameters = candidate_gate(x, y, choice)
    return gate, record | parameters


def candidate_gate(x: np.ndarray, y: np.ndarray, name: str) -> tuple[NeighbourGate, dict]:
    """The deployable gate a candidate of `fit_neighbour_gate`'s record stands for, fitted on all of (x, y):
    'always_raw', 'always_latent' or 'k=K margin=M' (M in sds of y). Returns (gate, its k / margin / bandwidth)."""
    features = torch.as_tensor(x, dtype=torch.float32)
    if name in ("always_raw", "always_latent"):
        return NeighbourGate.constant(features, raw=name == "always_raw"), {"k": None, "margin": None,
                                                                          "bandwidth": None}
    k, margin = (float(part.split("=")[1]) for part in name.split())
    spread = float(y.std()) or 1.0
    bandwidth = neighbour_bandwidth(x, int(k))
    gate = NeighbourGate(features, torch.as_tensor(y, dtype=torch.float32), bandwidth, offset=margin * spread)
    return gate, {"k": int(k), "margin": margin * spread, "bandwidth": bandwidth}
