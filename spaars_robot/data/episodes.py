"""The on-disk dataset format: Minari's layout, so `minari.load_dataset(id, download=False)` reads it.

    <root>/<namespace>/<name>-v0/data/main_data.hdf5   one group `episode_<i>` per episode:
        observations [T+1, obs_dim], actions [T, act_dim], rewards [T],
        terminations [T] (bool), truncations [T] (bool, kept separate), attrs id/total_steps/seed
    <root>/<namespace>/<name>-v0/data/metadata.json    Minari metadata + ref_min/max_score
        + `spaars_checksums` (SHA-256 of main_data.hdf5) + `spaars_metadata_sha256` (of the rest)

Writing goes to `<dir>.partial` and is renamed into place only when complete, so a dataset that
looks complete always is.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
from gymnasium.envs.registration import EnvSpec

from spaars_robot.data.files import atomic_write_json, sha256_file
from spaars_robot.errors import DatasetError

MAIN_FILE = "main_data.hdf5"
METADATA_FILE = "metadata.json"
MINARI_VERSION = "0.5.4"
REQUIRED_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")


@dataclass
class Episode:
    observations: np.ndarray  # [T+1, obs_dim] float32, includes the final observation
    actions: np.ndarray  # [T, act_dim] float32
    rewards: np.ndarray  # [T] float32
    terminations: np.ndarray  # [T] bool: the MDP ended (fall); bootstrapping stops
    truncations: np.ndarray  # [T] bool: time limit or data cut; bootstrapping continues
    seed: int | None = None

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def episode_return(self) -> float:
        return float(self.rewards.sum(dtype=np.float64))


def dataset_dir(root: Path | str, dataset_id: str) -> Path:
    return Path(root) / dataset_id


def _metadata_digest(metadata: dict) -> str:
    body = {k: v for k, v in metadata.items() if k != "spaars_metadata_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_dataset(
    path: Path | str,
    episodes: Iterable[Episode],
    *,
    dataset_id: str,
    obs_dim: int,
    action_dim: int,
    env_id: str | None,
    ref_min_score: float | None,
    ref_max_score: float | None,
    extra_metadata: dict | None = None,
    env_spec: EnvSpec | None = None,
) -> Path:
    """Write a complete dataset directory atomically (`path` is the directory holding `data/`).

    `env_spec` (default: gymnasium's registered spec of `env_id`) is recorded for Minari's
    `recover_environment()`, and the observation and action spaces are the env's own, dtype included
    (MuJoCo's observations are float64). The arrays are stored as float32, what training reads: a float32
    array is inside a float64 Box (`Box.contains` accepts a safe cast), while the reverse is not.
    """
    from minari.serialization import serialize_space

    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    (partial / "data").mkdir(parents=True)
    main = partial / "data" / MAIN_FILE
    total_steps = 0
    count = 0
    returns: list[float] = []
    with h5py.File(main, "w", track_order=True) as fh:
        for i, ep in enumerate(episodes):
            group = fh.create_group(f"episode_{i}")
            group.attrs["id"] = i
            group.attrs["total_steps"] = len(ep)
            if ep.seed is not None:
                group.attrs["seed"] = int(ep.seed)
            group.create_dataset("observations", data=ep.observations.astype(np.float32))
            group.create_dataset("actions", data=ep.actions.astype(np.float32))
            group.create_dataset("rewards", data=ep.rewards.astype(np.float32))
            group.create_dataset("terminations", data=ep.terminations.astype(bool))
            group.create_dataset("truncations", data=ep.truncations.astype(bool))
            total_steps += len(ep)
            count += 1
            returns.append(ep.episode_return)
    if env_spec is None and env_id is not None and env_id in gym.registry:
        env_spec = gym.spec(env_id)
    obs_space, act_space = _env_spaces(env_spec, obs_dim, action_dim)
    metadata = {
        "dataset_id": dataset_id,
        "total_episodes": count,
        "total_steps": total_steps,
        "data_format": "hdf5",
        "jpeg_encoding": False,
        "observation_space": serialize_space(obs_space),
        "action_space": serialize_space(act_space),
        "minari_version": MINARI_VERSION,
        "ref_min_score": ref_min_score,
        "ref_max_score": ref_max_score,
        "dataset_size": round(main.stat().st_size / 1e6, 2),
        "spaars_env_id": env_id,
        "spaars_checksums": {MAIN_FILE: sha256_file(main)},
        **(extra_metadata or {}),
    }
    if env_spec is not None:
        metadata["env_spec"] = env_spec.to_json()
    metadata["spaars_metadata_sha256"] = _metadata_digest(metadata)
    atomic_write_json(partial / "data" / METADATA_FILE, metadata)
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(path)
    return path


def _env_spaces(env_spec: EnvSpec | None, obs_dim: int, action_dim: int) -> tuple[gym.Space, gym.Space]:
    """The env's observation and action spaces (built once from its spec); without a spec, float32 boxes."""
    if env_spec is None:
        return (gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
                gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32))
    from spaars_robot.envs.mujoco_log import configure_mujoco_logging

    configure_mujoco_logging()
    env = gym.make(env_spec)
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if obs_space.shape != (obs_dim,) or act_space.shape != (action_dim,):
        raise DatasetError(f"{env_spec.id}: spaces {obs_space.shape}, {act_space.shape} do not match the "
                           f"data's ({obs_dim},), ({action_dim},)")
    return obs_space, act_space


def _data_dir(path: Path) -> Path:
    """Accept the dataset directory, its `data/` folder, or the metadata/hdf5 file itself."""
    if path.is_file():
        return path.parent
    if (path / "data").is_dir():
        return path / "data"
    return path


def read_metadata(path: Path | str, verify: bool = True) -> dict:
    data = _data_dir(Path(path))
    meta_path = data / METADATA_FILE
    if not meta_path.exists():
        if Path(str(path) + ".partial").exists() or data.name.endswith(".partial"):
            raise DatasetError(f"{path}: dataset is incomplete (still being written or interrupted); "
                               "re-run the collection to resume it")
        raise DatasetError(f"{meta_path}: missing; not a dataset directory")
    try:
        metadata = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{meta_path}: corrupt metadata ({exc})") from exc
    if not isinstance(metadata, dict):
        raise DatasetError(f"{meta_path}: corrupt metadata (not a JSON object)")
    if verify and "spaars_metadata_sha256" in metadata:
        if metadata["spaars_metadata_sha256"] != _metadata_digest(metadata):
            raise DatasetError(f"{meta_path}: metadata checksum mismatch (file was modified or corrupted)")
    return metadata


def _check_episode(file: Path, name: str, group, obs_dim: int | None, act_dim: int | None) -> Episode:
    if not isinstance(group, h5py.Group):
        raise DatasetError(f"{file}: {name} is not an episode group")
    missing = [k for k in REQUIRED_KEYS if k not in group]
    if missing:
        raise DatasetError(f"{file}: {name} is missing key(s) {', '.join(missing)}")
    try:
        arrays = {k: group[k][()] for k in REQUIRED_KEYS}
    except (OSError, KeyError, TypeError) as exc:
        raise DatasetError(f"{file}: {name}: cannot read data ({exc})") from exc
    seed = group.attrs.get("seed")
    return check_arrays(file, name, arrays, None if seed is None else int(seed), obs_dim, act_dim)


def check_arrays(file: Path, name: str, arrays: dict[str, np.ndarray], seed: int | None,
                 obs_dim: int | None, act_dim: int | None) -> Episode:
    """One episode's arrays (REQUIRED_KEYS) checked for shape, dims and finiteness, whatever file held them."""
    obs, act = arrays["observations"], arrays["actions"]
    steps = len(arrays["rewards"])
    if obs.ndim != 2 or act.ndim != 2:
        raise DatasetError(f"{file}: {name}: observations/actions must be 2-D, got {obs.shape} and {act.shape}")
    if obs.shape[0] != steps + 1 or act.shape[0] != steps:
        raise DatasetError(f"{file}: {name}: wrong shapes: {obs.shape[0]} observations, {act.shape[0]} actions, "
                           f"{steps} rewards (expected T+1, T, T)")
    for key in ("terminations", "truncations"):
        if arrays[key].shape != (steps,):
            raise DatasetError(f"{file}: {name}: {key} has shape {arrays[key].shape}, expected ({steps},)")
    if obs_dim is not None and obs.shape[1] != obs_dim:
        raise DatasetError(f"{file}: {name}: observation dim {obs.shape[1]}, metadata says {obs_dim}")
    if act_dim is not None and act.shape[1] != act_dim:
        raise DatasetError(f"{file}: {name}: action dim {act.shape[1]}, metadata says {act_dim}")
    for key in ("observations", "actions", "rewards"):
        if not np.isfinite(arrays[key]).all():
            raise DatasetError(f"{file}: {name}: {key} contain NaN or inf")
    return Episode(obs.astype(np.float32), act.astype(np.float32), arrays["rewards"].astype(np.float32),
                   arrays["terminations"].astype(bool), arrays["truncations"].astype(bool), seed)


def _space_dim(metadata: dict, key: str) -> int | None:
    space = metadata.get(key)
    if isinstance(space, str):
        try:
            space = json.loads(space)
        except json.JSONDecodeError:
            return None
    shape = space.get("shape") if isinstance(space, dict) else None
    return int(shape[0]) if shape else None


def iter_episodes(path: Path | str, verify_checksum: bool = True) -> Iterator[Episode]:
    """Read and validate every episode; any problem is a DatasetError naming the file."""
    data = _data_dir(Path(path))
    metadata = read_metadata(data)
    main = data / MAIN_FILE
    if not main.exists():
        raise DatasetError(f"{main}: missing")
    expected = metadata.get("spaars_checksums", {}).get(MAIN_FILE)
    if verify_checksum and expected and sha256_file(main) != expected:
        raise DatasetError(f"{main}: checksum mismatch (file is truncated, corrupted or was modified)")
    obs_dim, act_dim = _space_dim(metadata, "observation_space"), _space_dim(metadata, "action_space")
    try:
        fh = h5py.File(main, "r")
    except OSError as exc:
        raise DatasetError(f"{main}: not a readable HDF5 file ({exc})") from exc
    with fh:
        names = sorted((n for n in fh.keys() if n.startswith("episode_")), key=lambda n: int(n.split("_")[1]))
        if not names:
            raise DatasetError(f"{main}: contains no episodes")
        for name in names:
            yield _check_episode(main, name, fh[name], obs_dim, act_dim)
