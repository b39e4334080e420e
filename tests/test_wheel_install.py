"""The built wheel, installed into a fresh venv outside the checkout, runs the demo and finds its data files.

A non-editable install used to fail with "unknown task 'hopper'; known tasks:" (empty): `sim/`, `safety/` and
`policies/` sit at the top of the checkout, not in the package. The wheel now carries them (setup.py copies
them to `spaars_robot/_root/`), and this test proves it on the real artefact: build the wheel from a copy of
the checkout, install it with `--no-deps` into a venv with no view of the checkout, and run the console script
from an unrelated directory. The venv borrows only the third-party dependencies of the checkout's venv through
a `.pth` path line (a path line does not run the editable install's own `.pth` hook, so the checkout's
`spaars_robot` stays invisible); the test asserts the imported package is the installed one.
"""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]
# What a build needs is everything tracked but the tests and benchmarks; these are never part of it.
NOT_BUILT = (".venv", ".git", "datasets", "runs", "logs", "build", "tests", "benchmarks", "*.egg-info",
             "__pycache__", ".pytest_cache", ".hypothesis", "MUJOCO_LOG.TXT")

pytestmark = pytest.mark.timeout(300)


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """(venv, environment for its commands, a working directory far from the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(CHECKOUT, source, ignore=shutil.ignore_patterns(*NOT_BUILT))
    built = run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                 "--no-index", "-w", str(tmp / "dist"), "-q"], tmp, dict(os.environ))
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "dist").glob("spaars_robot-*.whl")

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (venv_site,) = (venv / "lib").glob("python3.*/site-packages")
    (venv_site / "checkout_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    installed = run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                     "--no-index", "-q", str(wheel)], tmp, dict(os.environ))
    assert installed.returncode == 0, installed.stderr

    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "SPAARS_ROOT", "VIRTUAL_ENV", "SPAARS_DATASETS", "SPAARS_CACHE")}
    env |= {"PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "MUJOCO_GL": "egl", "COLUMNS": "200",
            "SPAARS_DATASETS": str(tmp / "datasets")}
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return venv, env, elsewhere


def test_installed_package_is_the_wheel_not_the_checkout(installed) -> None:
    venv, env, cwd = installed
    probe = run([str(venv / "bin" / "python"), "-c",
                 "import spaars_robot; from spaars_robot.config.loading import data_root; "
                 "print(spaars_robot.__file__); print(data_root())"], cwd, env)
    assert probe.returncode == 0, probe.stderr
    package_file, root = (Path(line) for line in probe.stdout.split())
    assert not package_file.is_relative_to(CHECKOUT) and package_file.is_relative_to(venv), package_file
    assert root == package_file.parent / "_root"
    assert (root / "policies" / "hopper-default" / "policy.onnx").is_file()


def test_installed_demo_runs_from_another_directory(installed) -> None:
    venv, env, cwd = installed
    demo = run([str(venv / "bin" / "spaars-robot"), "demo", "--episodes", "1"], cwd, env, timeout=180)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "normalised score" in demo.stdout and "server stopped cleanly (exit 0)" in demo.stdout, demo.stdout
    assert not (cwd / "policies").exists() and not (cwd / "sim").exists()


def test_installed_cli_lists_shipped_tasks_and_makes_a_dataset(installed) -> None:
    venv, env, cwd = installed
    cli = str(venv / "bin" / "spaars-robot")
    unknown = run([cli, "sim", "--task", "no-such-task"], cwd, env)
    assert unknown.returncode == 2
    shipped = sorted(path.stem for path in (CHECKOUT / "sim" / "tasks").glob("*.yaml"))
    assert len(shipped) >= 5
    assert f"known tasks: {', '.join(shipped)}" in unknown.stderr + unknown.stdout  # every shipped task, no other
    collected = run([cli, "data", "collect", "--task", "hopper", "--quality", "random", "--steps", "500"], cwd, env)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    info = run([cli, "data", "info", "hopper-random"], cwd, env)
    assert info.returncode == 0, info.stdout + info.stderr
    assert "hopper-random" in info.stdout and "500" in info.stdout, info.stdout  # the id and its transitions


def test_data_root_override_is_named_when_wrong(installed) -> None:
    venv, env, cwd = installed
    missing = cwd / "no-such-root"
    result = run([str(venv / "bin" / "spaars-robot"), "demo"], cwd, env | {"SPAARS_ROOT": str(missing)})
    assert result.returncode == 2
    assert f"$SPAARS_ROOT={missing} is not a directory" in result.stderr + result.stdout
