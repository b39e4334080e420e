"""Issue 21: HalfCheetah runs print no `settotalmass` deprecation and leave no MUJOCO_LOG.TXT in the working
directory, while MuJoCo's other warnings still reach the user (the `mujoco` logger). Real MuJoCo, subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

HALFCHEETAH_TWICE = """
from spaars_robot.config.tasks import load_task
from spaars_robot.envs import make_env
task = load_task("halfcheetah")
for seed in (0, 1):  # the training env and an evaluation env, as in every run
    env = make_env(task)
    env.reset(seed=seed)
    env.step(env.action_space.sample())
    env.close()
print("ran")
"""

UNSTABLE_MODEL = """
import logging
import mujoco
import numpy as np
from spaars_robot.config.tasks import load_task
from spaars_robot.envs import make_env
logging.basicConfig(format="%(name)s %(levelname)s %(message)s")
make_env(load_task("hopper")).close()
model = mujoco.MjModel.from_xml_string('<mujoco><worldbody><body><freejoint/><geom size=".1"/></body></worldbody></mujoco>')
data = mujoco.MjData(model)
data.qvel[:] = np.nan
mujoco.mj_step(model, data)
"""


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": "egl", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300, check=True)


def test_halfcheetah_prints_no_settotalmass_warning_and_writes_no_log_in_cwd(tmp_path: Path) -> None:
    proc = _python(HALFCHEETAH_TWICE, tmp_path)
    assert "ran" in proc.stdout
    assert "settotalmass" not in proc.stdout + proc.stderr
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    assert list(tmp_path.iterdir()) == []


def test_other_mujoco_warnings_still_reach_the_mujoco_logger(tmp_path: Path) -> None:
    proc = _python(UNSTABLE_MODEL, tmp_path)
    assert "mujoco WARNING Nan, Inf or huge value in QVEL" in proc.stderr
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
