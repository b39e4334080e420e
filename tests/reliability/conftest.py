"""Fixtures for the reliability suite: one exported bundle, a free endpoint per test, the figures sink.

Figures (fuzz cases, load held, faults survived) are collected in `figures` and, when
SPAARS_RELIABILITY_OUT names a file, written there at the end of the session;
`benchmarks/report_reliability.py` renders that file into RELIABILITY.md.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spaars_robot.export.onnx_export import export_bundle
from spaars_robot.export.stack import random_stack
from tests.reliability.reliability_helpers import write_figures
from tests.runtime.runtime_helpers import free_port, hopper_info

os.environ.setdefault("MUJOCO_GL", "egl")
_FIGURES: dict = {}


@pytest.fixture(scope="session")
def bundle_path(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reliability") / "hopper-reliability"
    export_bundle(random_stack(11, 3, seed=0), hopper_info(), out)
    return out


@pytest.fixture
def endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def figures() -> Iterator[dict]:
    started = time.monotonic()
    yield _FIGURES
    out = os.environ.get("SPAARS_RELIABILITY_OUT")
    if out and _FIGURES:
        _FIGURES.setdefault("_run", {})["suite_wall_s"] = round(time.monotonic() - started, 1)
        write_figures(_FIGURES, Path(out))
