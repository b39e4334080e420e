"""Route MuJoCo's warnings through Python logging, minus one known harmless deprecation, and keep its log
file out of the working directory.

MuJoCo's default warning handler prints every warning to stdout and appends it to `MUJOCO_LOG.TXT` in the
current directory. Gymnasium's `half_cheetah.xml` (HalfCheetah-v5) still uses the compiler attribute
`settotalmass`, which MuJoCo 3.x reports as deprecated each time the model is compiled: about five times per
training run (the training env and every evaluation env), and a log file in whatever directory the user ran
from. The attribute still works (the model's total mass is 14, as D4RL's), so that one message is dropped;
every other MuJoCo warning goes to the `mujoco` logger, as dm_control does with its own handler.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import mujoco

LOGGER = logging.getLogger("mujoco")
# Warnings known to be harmless, by a fragment of their text (see the module docstring for each).
KNOWN_HARMLESS = ("compiler attribute 'settotalmass' is deprecated",)
DEFAULT_LOGFILE = "MUJOCO_LOG.TXT"


def mujoco_logfile() -> Path:
    """Where MuJoCo's own log file goes instead of the working directory (one per user, in the temp dir)."""
    return Path(tempfile.gettempdir()) / f"spaars-robot-{os.getuid()}-MUJOCO_LOG.TXT"


def forward_warning(message: str) -> None:
    """MuJoCo's warning callback: drop the known harmless ones, log the rest."""
    if any(fragment in message for fragment in KNOWN_HARMLESS):
        return
    LOGGER.warning(message)


def configure_mujoco_logging() -> None:
    """Install `forward_warning` and move MuJoCo's log file out of the working directory.

    Called before every env is built, because importing dm_control installs its own warning handler.
    The log file is moved only while it is MuJoCo's default, so a user's own setting stands.
    """
    mujoco.set_mju_user_warning(forward_warning)
    config = mujoco.MjLogConfig.get()
    if config.logfile == DEFAULT_LOGFILE:
        config.logfile = str(mujoco_logfile())
        config.set()
