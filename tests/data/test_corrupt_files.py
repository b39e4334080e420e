"""Every way a dataset file can be bad gives one DatasetError naming the file and the problem."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from spaars_robot.config.tasks import TaskSpec
from spaars_robot.data.episodes import (
    MAIN_FILE,
    METADATA_FILE,
    _metadata_digest,
    iter_episodes,
    write_dataset,
)
from spaars_robot.data.files import sha256_file
from spaars_robot.data.importers import import_dataset
from spaars_robot.data.summary import summarize
from spaars_robot.errors import DatasetError


@pytest.fixture
def dataset(tmp_path: Path, short_hopper: TaskSpec, hopper_rollout) -> Path:
    episodes = hopper_rollout(short_hopper, 200, 5)
    return write_dataset(
        tmp_path / "root" / "spaars" / "bad-v0",
        episodes,
        dataset_id="spaars/bad-v0",
        obs_dim=11,
        action_dim=3,
        env_id="Hopper-v5",
        ref_min_score=-20.272305,
        ref_max_score=3234.3,
    )


@pytest.fixture
def d4rl_file(tmp_path: Path, short_hopper: TaskSpec, hopper_rollout, d4rl_writer) -> Path:
    return d4rl_writer(tmp_path / "hopper-medium-v2.hdf5", hopper_rollout(short_hopper, 200, 5))


def resign(dataset: Path) -> None:
    """Recompute our checksums, as if a third party wrote the bad file: content checks must catch it."""
    meta_path = dataset / "data" / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["spaars_checksums"][MAIN_FILE] = sha256_file(dataset / "data" / MAIN_FILE)
    meta["spaars_metadata_sha256"] = _metadata_digest(meta)
    meta_path.write_text(json.dumps(meta))


def edit_episode(dataset: Path, edit: Callable[[h5py.Group], None], episode: int = 1) -> None:
    with h5py.File(dataset / "data" / MAIN_FILE, "a") as fh:
        edit(fh[f"episode_{episode}"])
    resign(dataset)


def replace(group: h5py.Group, key: str, value: np.ndarray) -> None:
    del group[key]
    group[key] = value


def truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for offset in range(len(data) // 2, len(data) // 2 + 8):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def expect_error(dataset: Path, pattern: str) -> str:
    with pytest.raises(DatasetError, match=pattern) as err:
        summarize(dataset)
    return str(err.value)


def test_truncated_main_file_fails_the_checksum(dataset: Path) -> None:
    truncate(dataset / "data" / MAIN_FILE)
    message = expect_error(dataset, "checksum mismatch")
    assert str(dataset / "data" / MAIN_FILE) in message


def test_flipped_bytes_fail_the_checksum(dataset: Path) -> None:
    flip_bytes(dataset / "data" / MAIN_FILE)
    expect_error(dataset, rf"{dataset / 'data' / MAIN_FILE}: checksum mismatch")


def test_modified_metadata_fails_its_checksum(dataset: Path) -> None:
    meta_path = dataset / "data" / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["ref_max_score"] = 1000.0  # would silently inflate every normalised score
    meta_path.write_text(json.dumps(meta))
    expect_error(dataset, rf"{meta_path}: metadata checksum mismatch")


def test_unparseable_metadata(dataset: Path) -> None:
    meta_path = dataset / "data" / METADATA_FILE
    meta_path.write_text(meta_path.read_text()[:50])
    expect_error(dataset, rf"{meta_path}: corrupt metadata")


def test_truncated_hdf5_with_matching_checksum(dataset: Path) -> None:
    truncate(dataset / "data" / MAIN_FILE)
    resign(dataset)
    expect_error(dataset, "not a readable HDF5 file")


def test_missing_key(dataset: Path) -> None:
    edit_episode(dataset, lambda g: g.__delitem__("rewards"))
    expect_error(dataset, r"main_data.hdf5: episode_1 is missing key\(s\) rewards")


def test_wrong_shapes(dataset: Path) -> None:
    edit_episode(dataset, lambda g: replace(g, "actions", g["actions"][()][:-2]))
    expect_error(dataset, r"episode_1: wrong shapes: \d+ observations, \d+ actions")
    edit_episode(dataset, lambda g: replace(g, "observations", g["observations"][()][:, :5]), episode=0)
    expect_error(dataset, "episode_0: observation dim 5, metadata says 11")


def test_nan_in_observations(dataset: Path) -> None:
    def poison(group: h5py.Group) -> None:
        obs = group["observations"][()]
        obs[3, 2] = np.nan
        replace(group, "observations", obs)

    edit_episode(dataset, poison)
    expect_error(dataset, "episode_1: observations contain NaN or inf")


def test_interrupted_write_does_not_look_complete(dataset: Path) -> None:
    partial = dataset.with_name(dataset.name + ".partial")
    dataset.rename(partial)
    (partial / "data" / METADATA_FILE).unlink()
    with pytest.raises(DatasetError, match="dataset is incomplete"):
        list(iter_episodes(dataset))


# -- D4RL import ---------------------------------------------------------------------------------------
def rewrite(path: Path, key: str, value: np.ndarray | None) -> None:
    with h5py.File(path, "a") as fh:
        del fh[key]
        if value is not None:
            fh[key] = value


def d4rl_case(name: str, path: Path) -> str:
    """Break `path` one way; return the message pattern the import must raise."""
    if name == "missing key":
        rewrite(path, "actions", None)
        return r"missing key\(s\) actions"
    if name == "wrong obs dim":
        with h5py.File(path, "r") as fh:
            obs = fh["observations"][()]
        rewrite(path, "observations", obs[:, :10])
        return r"'observations' has shape \(200, 10\), expected \(200, 11\) \(obs_dim of the task\)"
    if name == "rows disagree":
        with h5py.File(path, "r") as fh:
            rewards = fh["rewards"][()]
        rewrite(path, "rewards", rewards[:-1])
        return r"'rewards' has shape \(199,\), expected \(200,\)"
    if name == "nan":
        with h5py.File(path, "r") as fh:
            rewards = fh["rewards"][()]
        rewards[17] = np.nan
        rewrite(path, "rewards", rewards)
        return r"'rewards' contains NaN or inf \(first at row 17\)"
    if name == "inf in next_observations":
        with h5py.File(path, "r") as fh:
            nxt = fh["next_observations"][()]
        nxt[42, 0] = np.inf
        rewrite(path, "next_observations", nxt)
        return r"'next_observations' contains NaN or inf \(first at row 42\)"
    if name == "not numeric":
        rewrite(path, "terminals", np.array([b"no"] * 200))
        return "'terminals' must be numeric"
    if name == "truncated":
        truncate(path)
        return "truncated or corrupt HDF5 file"
    if name == "not hdf5":
        path.write_text("observations,actions\n1,2\n")
        return r"not an HDF5 file"
    if name == "empty":
        path.write_bytes(b"")
        return r"empty file \(0 bytes\)"
    raise AssertionError(name)


D4RL_CASES = [
    "missing key",
    "wrong obs dim",
    "rows disagree",
    "nan",
    "inf in next_observations",
    "not numeric",
    "truncated",
    "not hdf5",
    "empty",
]


@pytest.mark.parametrize("case", D4RL_CASES)
def test_bad_d4rl_files(case: str, d4rl_file: Path, short_hopper: TaskSpec, tmp_path: Path) -> None:
    pattern = d4rl_case(case, d4rl_file)
    with pytest.raises(DatasetError, match=pattern) as err:
        import_dataset(d4rl_file, short_hopper, tmp_path / "out")
    assert str(err.value).startswith(f"{d4rl_file}: ")
    assert not (tmp_path / "out" / "spaars").exists() or not any((tmp_path / "out" / "spaars").iterdir())


def test_missing_source(short_hopper: TaskSpec, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file or directory"):
        import_dataset(tmp_path / "nope.hdf5", short_hopper, tmp_path / "out")


def test_minari_metadata_that_disagrees_with_the_file(
    dataset: Path, short_hopper: TaskSpec, tmp_path: Path
) -> None:
    meta_path = dataset / "data" / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["total_steps"] += 5
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=rf"{meta_path}: total_steps is {meta['total_steps']} but"):
        import_dataset(dataset, short_hopper, tmp_path / "out")


# -- the same errors through the real CLI ---------------------------------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spaars_robot.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_reports_one_line_and_exit_2(dataset: Path, d4rl_file: Path, tmp_path: Path) -> None:
    flip_bytes(dataset / "data" / MAIN_FILE)
    result = run_cli("data", "info", str(dataset))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    expected = (
        f"error: {dataset / 'data' / MAIN_FILE}: checksum mismatch (file is truncated, corrupted "
        "or was modified)"
    )
    assert lines == [expected]
    assert "Traceback" not in result.stderr + result.stdout

    debug = run_cli("--debug", "data", "info", str(dataset))
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert "DatasetError" in debug.stderr and "checksum mismatch" in debug.stderr


@pytest.mark.parametrize("case", ["truncated", "nan", "missing key"])
def test_cli_import_errors(
    case: str,
    d4rl_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    short_hopper: TaskSpec,
) -> None:
    """In-process through `cli.main` (the same handler as the console script) to keep this fast."""
    from spaars_robot import cli

    d4rl_case(case, d4rl_file)
    task_yaml = tmp_path / "hopper-short.yaml"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "spaars-robot",
            "data",
            "import",
            str(d4rl_file),
            "--task",
            str(task_yaml),
            "--root",
            str(tmp_path / "out"),
        ],
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {d4rl_file}: ")
