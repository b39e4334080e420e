"""gymnasium-robotics 1.4.2 on mujoco >= 3.12: the one place its environments are registered and fixed.

Why a fix is needed: gymnasium-robotics' `utils/mujoco_utils.py` reads a joint's type as
`model.jnt_type[joint_id]` (a `numpy.int32`) and compares it with `mujoco.mjtJoint` members. From mujoco 3.12
on (3.17.0 is pinned for dm-control), mujoco's pybind11 enums no longer compare equal to numpy integers, so
`np.int32(3) in (mjJNT_HINGE, mjJNT_SLIDE)` is False and every joint read or write there fails an
`AssertionError` (mujoco_utils.py:142/167/192/213). FrankaKitchen-v1 (also Fetch and Hand) hits it at its first
reset; the maze envs do not use those functions. 1.4.2 is the latest release, so there is no upgrade that fixes
it (`../shared/research/feasibility.md`, "The gymnasium-robotics enum bug").

The fix: `mujoco_utils` reaches mujoco only through its module global `mujoco`, so that one name is rebound to a
copy of the mujoco module whose `mjtJoint` is an `IntEnum` with the same names and values. An `IntEnum` is an
`int`, which compares equal to `numpy.int32`; everything else (`mj_name2id`, `mjtObj`, ...) is mujoco's own
object. Nothing of mujoco itself and no other module changes, and no library source is copied or rewritten.
`tests/envs/test_robotics_envs.py` checks that without it FrankaKitchen's reset raises and with it an episode steps.
"""
from __future__ import annotations

import contextlib
import enum
import io
import types

import gymnasium as gym
import mujoco

PATCHED_MARKER = "_spaars_int_joint_types"


def _mujoco_with_int_joint_types() -> types.ModuleType:
    """A module object with all of mujoco's attributes, except `mjtJoint` as an `IntEnum` of the same members."""
    view = types.ModuleType("mujoco", doc="mujoco, with mjtJoint as an IntEnum (spaars_robot.envs.robotics_compat)")
    view.__dict__.update(vars(mujoco))
    view.mjtJoint = enum.IntEnum("mjtJoint", {name: int(value) for name, value in mujoco.mjtJoint.__members__.items()})
    setattr(view, PATCHED_MARKER, True)
    return view


def fix_joint_type_comparisons() -> None:
    """Make gymnasium-robotics' joint helpers work on mujoco >= 3.12; idempotent (a second call changes nothing)."""
    from gymnasium_robotics.utils import mujoco_utils

    if not getattr(mujoco_utils.mujoco, PATCHED_MARKER, False):
        mujoco_utils.mujoco = _mujoco_with_int_joint_types()


def ensure_gymnasium_robotics() -> None:
    """Register gymnasium-robotics' envs with gymnasium and apply the fix; call before building one of its envs.

    The import prints a notice to stderr about Adroit reward versions (fixed in 1.4.3, which is not released);
    no task here uses Adroit, and the print would turn every one-line `error:` of the CLI into two lines, so
    the import's stderr is swallowed.
    """
    with contextlib.redirect_stderr(io.StringIO()):
        import gymnasium_robotics
    gym.register_envs(gymnasium_robotics)
    fix_joint_type_comparisons()
