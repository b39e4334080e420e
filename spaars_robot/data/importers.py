"""Convert datasets the user already has on disk (D4RL flat HDF5, Minari directories) to our format.

Minari directories come in either of Minari's storage formats: HDF5 (`data/main_data.hdf5`, read with h5py)
or arrow (`data/<episode id>/part-0.arrow`, read with pyarrow).

Local files only: nothing here touches the network, so a D4RL file copied from an old machine or a
Minari dataset from another cache works offline. Both readers produce `Episode`s and hand them to
`write_dataset`, so an imported dataset is checksummed, Minari-loadable and read by the same code as
a collected one; the task supplies the reference scores, so `data info` reports the normalised score.

D4RL files (Fu et al. 2020, `d4rl/__init__.py:get_dataset`, `qlearning_dataset`) are one flat table:
episodes are the runs between rows where `terminals | timeouts` is set. The table has no row for the
observation after an episode's last step, so:
- with a `next_observations` key, the final observation is `next_observations[last]`;
- without it, an episode that ends by timeout (or by the end of the file) has no known final
  observation and loses its last transition, exactly as `qlearning_dataset` skips timeout rows; the
  transition before it becomes the (truncated) end. An episode that ends by termination keeps its
  last transition (it carries the termination signal) and repeats its last observation as the final
  one: with `done = 1` the target never reads it, and `qlearning_dataset` puts an equally meaningless
  row there (the next episode's first observation).
- A row with both `terminals` and `timeouts` set (a fall on the last allowed step) is a termination:
  its transition is kept, where `qlearning_dataset` skips every timeout row and so loses the fall.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

import h5py
import numpy as np

from spaars_robot.config.tasks import TaskSpec
from spaars_robot.data.episodes import (
    MAIN_FILE,
    METADATA_FILE,
    Episode,
    _check_episode,
    check_arrays,
    dataset_dir,
    read_metadata,
    write_dataset,
)
from spaars_robot.data.files import sha256_file
from spaars_robot.envs import env_spec
from spaars_robot.errors import DatasetError

NAMESPACE = "spaars"
SourceFormat = Literal["d4rl", "minari"]
D4RL_REQUIRED = ("observations", "actions", "rewards", "terminals")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def detect_format(path: Path) -> SourceFormat:
    """A directory (or a `metadata.json`) is a Minari dataset; a single file is a D4RL HDF5 table."""
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory")
    if path.is_dir() or path.name == METADATA_FILE:
        return "minari"
    if path.name == MAIN_FILE and (path.parent / METADATA_FILE).exists():
        return "minari"
    return "d4rl"


def default_name(path: Path, source: SourceFormat) -> str:
    """`hopper_medium-v2.hdf5` -> `hopper-medium-d4rl`; `.../hopper/medium-v0` -> `medium-minari`.

    The `-d4rl`/`-minari` suffix keeps an import from replacing a collected dataset of the same name.
    """
    if source == "minari":
        data = _minari_data_dir(path)
        stem = data.parent.name if data.name == "data" else data.name
    else:
        stem = path.stem
    stem = re.sub(r"-v\d+$", "", stem.lower())
    stem = re.sub(r"[^a-z0-9]+", "-", stem).strip("-") or "dataset"
    return f"{stem}-{source}"


def _open_hdf5(path: Path) -> h5py.File:
    """Open read-only, turning every way a file can be unusable into a DatasetError naming it."""
    if not path.is_file():
        raise DatasetError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: empty file (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(len(HDF5_SIGNATURE))
    if head != HDF5_SIGNATURE:
        raise DatasetError(f"{path}: not an HDF5 file (no HDF5 signature at the start)")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{path}: truncated or corrupt HDF5 file ({exc})") from exc


def _read_array(path: Path, fh: h5py.File, key: str) -> np.ndarray:
    node = fh.get(key)
    if not isinstance(node, h5py.Dataset):
        raise DatasetError(f"{path}: '{key}' is not a dataset")
    try:
        array = node[()]
    except (OSError, RuntimeError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read '{key}' (truncated or corrupt HDF5: {exc})") from exc
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise DatasetError(
            f"{path}: '{key}' must be numeric, got dtype {getattr(array, 'dtype', type(array))}"
        )
    return array


def _column(path: Path, name: str, array: np.ndarray, rows: int) -> np.ndarray:
    """Flags and rewards are (N,) in D4RL, sometimes (N, 1) (`get_dataset` squeezes those)."""
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.shape != (rows,):
        raise DatasetError(f"{path}: '{name}' has shape {array.shape}, expected ({rows},)")
    return array


def _table(path: Path, name: str, array: np.ndarray, rows: int, dim: int, dim_name: str) -> np.ndarray:
    if array.shape != (rows, dim):
        raise DatasetError(
            f"{path}: '{name}' has shape {array.shape}, expected ({rows}, {dim}) ({dim_name} of the task)"
        )
    return array


def read_d4rl(path: Path | str, task: TaskSpec) -> list[Episode]:
    """Split a D4RL flat HDF5 table into episodes (see the module docstring for the final observation)."""
    path = Path(path)
    with _open_hdf5(path) as fh:
        missing = [k for k in D4RL_REQUIRED if k not in fh]
        if missing:
            raise DatasetError(
                f"{path}: missing key(s) {', '.join(missing)} (a D4RL file has "
                f"{', '.join(D4RL_REQUIRED)}, timeouts and optionally next_observations)"
            )
        raw = {
            k: _read_array(path, fh, k) for k in (*D4RL_REQUIRED, "timeouts", "next_observations") if k in fh
        }
    rows = raw["observations"].shape[0] if raw["observations"].ndim else 0
    if rows == 0:
        raise DatasetError(f"{path}: 'observations' has no rows")
    obs = _table(path, "observations", raw["observations"], rows, task.obs_dim, "obs_dim").astype(np.float32)
    act = _table(path, "actions", raw["actions"], rows, task.action_dim, "action_dim").astype(np.float32)
    rew = _column(path, "rewards", raw["rewards"], rows).astype(np.float32)
    term = _column(path, "terminals", raw["terminals"], rows).astype(bool)
    if "timeouts" in raw:
        timeout = _column(path, "timeouts", raw["timeouts"], rows).astype(bool)
    else:
        # D4RL v0 files have no timeouts key; qlearning_dataset then cuts at the env's episode limit.
        timeout = _episode_limit_cuts(term, task.max_episode_steps)
    next_obs = None
    if "next_observations" in raw:
        next_obs = _table(
            path, "next_observations", raw["next_observations"], rows, task.obs_dim, "obs_dim"
        ).astype(np.float32)
    for name, array in (
        ("observations", obs),
        ("actions", act),
        ("rewards", rew),
        ("next_observations", next_obs),
    ):
        if array is not None and not np.isfinite(array).all():
            bad = int(np.flatnonzero(~np.isfinite(array).reshape(rows, -1).all(1))[0])
            raise DatasetError(f"{path}: '{name}' contains NaN or inf (first at row {bad})")

    ends = np.flatnonzero(term | timeout).tolist()
    if not ends or ends[-1] != rows - 1:
        ends.append(rows - 1)  # the file stops mid-episode (D4RL's 1M-row cut)
    episodes: list[Episode] = []
    start = 0
    for end in ends:
        sl = slice(start, end + 1)
        if next_obs is not None:
            final = next_obs[end : end + 1]
            truncs = timeout[sl].copy()
            truncs[-1] |= not term[end]
            episodes.append(Episode(np.concatenate([obs[sl], final]), act[sl], rew[sl], term[sl], truncs))
        elif term[end]:
            episodes.append(
                Episode(
                    np.concatenate([obs[sl], obs[end : end + 1]]),
                    act[sl],
                    rew[sl],
                    term[sl],
                    np.zeros(end + 1 - start, bool),
                )
            )
        elif end > start:  # drop the last transition: its next observation is unknown
            sl = slice(start, end)
            truncs = np.zeros(end - start, bool)
            truncs[-1] = True
            episodes.append(Episode(obs[start : end + 1], act[sl], rew[sl], term[sl], truncs))
        start = end + 1
    if not episodes:
        raise DatasetError(f"{path}: no episode with at least one usable transition")
    return episodes


def _episode_limit_cuts(terminals: np.ndarray, limit: int) -> np.ndarray:
    """Timeouts for files without them: every `limit`-th step since the last terminal, as D4RL did."""
    cuts = np.zeros_like(terminals)
    step = 0
    for i, done in enumerate(terminals):
        if done:
            step = 0
            continue
        if step == limit - 1:
            cuts[i] = True
            step = 0
        else:
            step += 1
    return cuts


def _minari_data_dir(path: Path) -> Path:
    if path.is_file():
        return path.parent
    return path / "data" if (path / "data").is_dir() else path


def read_minari(path: Path | str, task: TaskSpec) -> list[Episode]:
    """Read a Minari dataset directory: `data/metadata.json` + `data/main_data.hdf5` (h5py) or arrow files."""
    data = _minari_data_dir(Path(path))
    meta_path, main = data / METADATA_FILE, data / MAIN_FILE
    metadata = read_metadata(data, verify=False)  # a foreign dataset carries no spaars checksums
    if metadata.get("data_format", "hdf5") == "arrow":
        episodes = _read_minari_arrow(data, task)
        _check_totals(meta_path, data, metadata, episodes)
        return episodes
    if metadata.get("data_format", "hdf5") != "hdf5":
        raise DatasetError(
            f"{meta_path}: data_format {metadata['data_format']!r} is not supported (hdf5 or arrow)"
        )
    if not main.exists():
        raise DatasetError(f"{main}: missing")
    expected = (
        metadata.get("spaars_checksums", {}).get(MAIN_FILE)
        if isinstance(metadata.get("spaars_checksums"), dict)
        else None
    )
    if expected and sha256_file(main) != expected:
        raise DatasetError(f"{main}: checksum mismatch (file is truncated, corrupted or was modified)")
    episodes: list[Episode] = []
    with _open_hdf5(main) as fh:
        names = sorted((n for n in fh if re.fullmatch(r"episode_\d+", n)), key=lambda n: int(n[8:]))
        if not names:
            raise DatasetError(f"{main}: contains no episode_<i> groups")
        for name in names:
            group = fh[name]
            if isinstance(group, h5py.Group) and isinstance(group.get("observations"), h5py.Group):
                raise DatasetError(f"{main}: {name}: dict/tuple observations are not supported (Box only)")
            try:
                episodes.append(_check_episode(main, name, group, task.obs_dim, task.action_dim))
            except (OSError, RuntimeError) as exc:
                raise DatasetError(f"{main}: {name}: truncated or corrupt HDF5 ({exc})") from exc
    _check_totals(meta_path, main, metadata, episodes)
    return episodes


def _check_totals(meta_path: Path, data: Path, metadata: dict, episodes: list[Episode]) -> None:
    """A Minari dataset's metadata counts must match what its data holds (a partial copy shows up here)."""
    for key, actual in (("total_episodes", len(episodes)), ("total_steps", sum(len(e) for e in episodes))):
        if key in metadata and metadata[key] != actual:
            raise DatasetError(f"{meta_path}: {key} is {metadata[key]} but {data.name} holds {actual}")


def _arrow_episode_dirs(data: Path) -> list[Path]:
    dirs = [p for p in data.iterdir() if p.is_dir() and p.name.isdigit()]
    if not dirs:
        raise DatasetError(f"{data}: contains no episode folders (<id>/part-0.arrow)")
    return sorted(dirs, key=lambda p: int(p.name))


def _arrow_column(folder: Path, table, key: str, rows: int) -> np.ndarray:
    """A column as numpy: a fixed-size list column (Box space) becomes [rows, dim], a scalar one [rows]."""
    import pyarrow as pa

    if key not in table.column_names:
        raise DatasetError(f"{folder}: missing column '{key}'")
    column = table.column(key).combine_chunks()
    if pa.types.is_struct(column.type):
        raise DatasetError(f"{folder}: dict/tuple {key} are not supported (Box only)")
    if pa.types.is_fixed_size_list(column.type):
        return column.flatten().to_numpy(zero_copy_only=False).reshape(rows, column.type.list_size)
    if pa.types.is_binary(column.type):
        raise DatasetError(f"{folder}: JPEG-encoded (image) {key} are not supported (Box only)")
    return column.to_numpy(zero_copy_only=False)


def _read_minari_arrow(data: Path, task: TaskSpec) -> list[Episode]:
    """Read a Minari dataset in its arrow format: `data/<episode id>/part-0.arrow` + `metadata.json` each.

    Minari's ArrowStorage writes one row per observation (T+1 rows); actions, rewards, terminations and
    truncations are padded with one trailing row, which is dropped here as Minari's own reader does.
    """
    try:
        import pyarrow.dataset as pads
        from pyarrow import ArrowException
    except ImportError as exc:  # a declared dependency; only a broken install lacks it
        raise DatasetError(f"{data}: reading Minari's arrow format needs pyarrow ({exc})") from exc
    episodes: list[Episode] = []
    for folder in _arrow_episode_dirs(data):
        try:
            table = pads.dataset(str(folder), format="arrow",
                                 ignore_prefixes=["_", ".", METADATA_FILE]).to_table()
        except (ArrowException, OSError) as exc:
            raise DatasetError(f"{folder}: truncated or corrupt arrow file ({exc})") from exc
        rows = table.num_rows
        if rows < 2:
            raise DatasetError(f"{folder}: {rows} row(s); an episode needs at least one transition")
        arrays = {key: _arrow_column(folder, table, key, rows) for key in
                  ("observations", "actions", "rewards", "terminations", "truncations")}
        arrays = {key: value if key == "observations" else value[:-1] for key, value in arrays.items()}
        seed = None
        episode_meta = folder / METADATA_FILE
        if episode_meta.exists():
            try:
                seed = json.loads(episode_meta.read_text()).get("seed")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
                raise DatasetError(f"{episode_meta}: corrupt episode metadata ({exc})") from exc
        episodes.append(check_arrays(folder, f"episode {folder.name}", arrays,
                                     None if seed is None else int(seed), task.obs_dim, task.action_dim))
    return episodes


def _source_sha256(path: Path, source: SourceFormat) -> str:
    """SHA-256 of what was imported: the D4RL file, Minari's main_data.hdf5, or (arrow) every episode file."""
    if source == "d4rl":
        return sha256_file(path)
    data = _minari_data_dir(path)
    if (data / MAIN_FILE).exists():
        return sha256_file(data / MAIN_FILE)
    digest = hashlib.sha256()
    for folder in _arrow_episode_dirs(data):
        for part in sorted(folder.glob("*.arrow")):
            digest.update(f"{folder.name}/{part.name}:{sha256_file(part)}\n".encode())
    return digest.hexdigest()


def import_target(root: Path | str, name: str, overwrite: bool) -> tuple[str, Path]:
    """(dataset id, directory) an import named `name` writes; refused before reading anything when taken."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or re.search(r"-v\d+$", name):
        raise DatasetError(
            f"invalid dataset name {name!r}: use lowercase letters, digits, '-' and '_', "
            "without a -vN version suffix (it becomes <name>-v0)"
        )
    ds_id = f"{NAMESPACE}/{name}-v0"
    out = dataset_dir(root, ds_id)
    if out.exists() and not overwrite:
        raise DatasetError(f"{out}: already exists; pass --overwrite or choose another --name")
    return ds_id, out


def import_dataset(
    path: Path | str, task: TaskSpec, root: Path | str, name: str | None = None, overwrite: bool = False
) -> Path:
    """Read `path` (format detected), write `<root>/spaars/<name>-v0` and return its directory."""
    path = Path(path)
    source = detect_format(path)
    ds_id, out = import_target(root, name or default_name(path, source), overwrite)
    episodes = read_d4rl(path, task) if source == "d4rl" else read_minari(path, task)
    extra = {
        "spaars_task": task.name,
        "spaars_source": str(path.resolve()),
        "spaars_source_format": source,
        "spaars_source_sha256": _source_sha256(path, source),
    }
    return write_dataset(
        out,
        episodes,
        dataset_id=ds_id,
        obs_dim=task.obs_dim,
        action_dim=task.action_dim,
        env_id=task.env_id if task.backend == "gymnasium" else None,
        ref_min_score=task.ref_min_score,
        ref_max_score=task.ref_max_score,
        extra_metadata=extra,
        env_spec=env_spec(task),
    )
