"""Where tasks, protocols, safety specs and the default bundle are read from: `$SPAARS_ROOT`, else the
checkout, else the copy inside an installed wheel; every failure names the places it looked.

(`tests/test_wheel_install.py` runs the installed-wheel case for real.)
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from spaars_robot.config import loading
from spaars_robot.config.loading import data_root
from spaars_robot.config.tasks import available_tasks, load_task
from spaars_robot.errors import ConfigError

CHECKOUT = Path(__file__).resolve().parents[2]


def test_checkout_is_the_root_when_nothing_overrides_it(monkeypatch) -> None:
    monkeypatch.delenv("SPAARS_ROOT", raising=False)
    assert data_root() == CHECKOUT
    assert "hopper" in available_tasks()


def test_spaars_root_overrides_and_errors_name_it(tmp_path, monkeypatch) -> None:
    (tmp_path / "sim" / "tasks").mkdir(parents=True)
    shutil.copy(CHECKOUT / "sim" / "tasks" / "hopper.yaml", tmp_path / "sim" / "tasks" / "my-hopper.yaml")
    monkeypatch.setenv("SPAARS_ROOT", str(tmp_path))
    assert data_root() == tmp_path
    assert available_tasks() == ["my-hopper"]
    with pytest.raises(ConfigError, match=f"known tasks: my-hopper \\(looked in {tmp_path}/sim/tasks"):
        load_task("walker2d")


def test_spaars_root_that_is_not_a_directory_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SPAARS_ROOT", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=f"SPAARS_ROOT={tmp_path / 'missing'} is not a directory"):
        data_root()


def test_packaged_copy_is_used_without_a_checkout_and_absence_names_both(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SPAARS_ROOT", raising=False)
    packaged = tmp_path / "site-packages" / "spaars_robot" / "_root"
    monkeypatch.setattr(loading, "CHECKOUT_ROOT", tmp_path / "lib")
    monkeypatch.setattr(loading, "PACKAGED_ROOT", packaged)
    with pytest.raises(ConfigError, match=f"looked in the checkout \\({tmp_path / 'lib'}\\) and in the installed "
                                          f"package \\({packaged}\\); set \\$SPAARS_ROOT"):
        data_root()
    (packaged / "sim" / "tasks").mkdir(parents=True)
    assert data_root() == packaged
