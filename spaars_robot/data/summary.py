"""`data info`: what a dataset holds and how good its behaviour was, in D4RL-normalised terms."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from spaars_robot.data.episodes import iter_episodes, read_metadata
from spaars_robot.envs import kitchen as kitchen_subtasks


class DatasetSummary(BaseModel):
    dataset_id: str
    path: str
    episodes: int
    steps: int
    terminations: int
    truncations: int
    return_mean: float
    return_std: float
    return_min: float
    return_max: float
    normalized_score_mean: float | None
    normalized_score_std: float | None
    ref_min_score: float | None
    ref_max_score: float | None
    reference_scores: str | None
    checksum_ok: bool
    subtasks_reached: dict[str, float] | None = None  # kitchen: share of episodes that reached each subtask


def _env_spec(metadata: dict) -> dict:
    """The recorded gymnasium EnvSpec as a dict ({} when absent or unreadable: it only labels the summary)."""
    try:
        spec = json.loads(metadata["env_spec"]) if isinstance(metadata.get("env_spec"), str) else {}
    except json.JSONDecodeError:
        return {}
    return spec if isinstance(spec, dict) else {}


def _goal_env_id(metadata: dict) -> str:
    """The gymnasium-robotics env id inside a goal task's spec (`envs.goal` keeps it in its kwargs)."""
    kwargs = _env_spec(metadata).get("kwargs", {})
    return str(kwargs.get("env_id", "")) if isinstance(kwargs, dict) else ""


def reference_note(metadata: dict) -> str | None:
    """Where the reference scores of the normalised score come from, said where the score is printed.

    The gymnasium MuJoCo tasks use D4RL's reference returns (random and expert policies), which D4RL measured
    on the -v2 envs (mujoco-py); this tool runs the -v5 envs (MuJoCo's own bindings, small model and reward
    fixes), so its normalised scores are close to, not identical with, published D4RL numbers.
    """
    if metadata.get("ref_min_score") is None or metadata.get("ref_max_score") is None:
        return None
    spec = _env_spec(metadata)
    entry_point = str(spec.get("entry_point", ""))
    if entry_point.startswith("gymnasium.envs.mujoco"):
        env_id = metadata.get("spaars_env_id") or spec.get("id")
        return (f"D4RL's v2 reference scores applied to {env_id}: D4RL measured them on the -v2 MuJoCo envs, "
                "so normalised scores are close to, not identical with, published D4RL numbers")
    if entry_point.startswith("spaars_robot.envs.dmc"):
        return "dm-control's episode return range 0..1000 (no D4RL reference exists)"
    if entry_point.startswith("spaars_robot.envs.goal"):  # a gymnasium-robotics task (sim/tasks/<task>.yaml)
        env_id = _goal_env_id(metadata)
        if env_id.startswith(kitchen_subtasks.ENV_PREFIX):
            return (f"completed target subtasks / {metadata['ref_max_score']:g} (D4RL's kitchen range; the return "
                    "counts each target once)")
        if env_id.startswith("AntMaze"):
            return "success rate (D4RL's antmaze range 0..1; the episode ends at the goal with return 1)"
    return "from the dataset's metadata (ref_min_score, ref_max_score)"




def summarize(path: Path | str) -> DatasetSummary:
    metadata = read_metadata(path)
    kitchen = _goal_env_id(metadata).startswith(kitchen_subtasks.ENV_PREFIX)
    reached: dict[str, int] = {}
    returns, steps, terms, truncs, count = [], 0, 0, 0, 0
    for ep in iter_episodes(path):  # verifies the checksum and every episode
        if kitchen:
            for name, hit in kitchen_subtasks.subtasks_reached(ep.observations).items():
                reached[name] = reached.get(name, 0) + int(hit)
        returns.append(ep.episode_return)
        steps += len(ep)
        terms += int(ep.terminations.any())
        truncs += int(ep.truncations[-1]) if len(ep) else 0
        count += 1
    r = np.asarray(returns)
    lo, hi = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    norm = 100.0 * (r - lo) / (hi - lo) if lo is not None and hi is not None else None
    return DatasetSummary(
        dataset_id=str(metadata.get("dataset_id", Path(path).name)), path=str(path), episodes=count, steps=steps,
        terminations=terms, truncations=truncs, return_mean=float(r.mean()), return_std=float(r.std()),
        return_min=float(r.min()), return_max=float(r.max()),
        normalized_score_mean=None if norm is None else float(norm.mean()),
        normalized_score_std=None if norm is None else float(norm.std()),
        ref_min_score=lo, ref_max_score=hi, reference_scores=reference_note(metadata), checksum_ok=True,
        subtasks_reached={name: round(hits / count, 4) for name, hits in sorted(reached.items())} if kitchen else None,
    )
