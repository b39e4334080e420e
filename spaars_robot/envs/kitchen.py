"""Franka Kitchen's subtasks read from the flat observation: which ones an episode reached.

The env rewards only its target subtasks, once each, so a dataset's returns cannot say which of the other
subtasks (slide cabinet, hinge cabinet, top burner) its episodes performed, nor which targets. The objects'
joint positions are in every stored observation, and the env's own goal table and threshold say when a subtask
counts as done; `data info` reports the share of episodes that reached each one with them.
"""
from __future__ import annotations

from functools import cache

import numpy as np

from spaars_robot.envs.robotics_compat import ensure_gymnasium_robotics

ENV_PREFIX = "FrankaKitchen"
OBJECT_QPOS_START = 18  # flat observation: 9 robot joint positions, 9 velocities, then qpos[9:30] of the objects
FIRST_OBJECT_QPOS = 9


@cache
def subtask_goals() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    """gymnasium-robotics' (qpos indices, goal values, distance threshold) per subtask."""
    ensure_gymnasium_robotics()
    from gymnasium_robotics.envs.franka_kitchen.kitchen_env import (
        BONUS_THRESH,
        OBS_ELEMENT_GOALS,
        OBS_ELEMENT_INDICES,
    )

    return OBS_ELEMENT_INDICES, OBS_ELEMENT_GOALS, float(BONUS_THRESH)


def subtasks_reached(observations: np.ndarray) -> dict[str, bool]:
    """For each subtask, whether any of these flat observations has it within the env's completion threshold."""
    indices, goals, threshold = subtask_goals()
    if observations.ndim != 2 or observations.shape[1] < OBJECT_QPOS_START + 21:
        raise ValueError(f"kitchen observations must be (steps, >= {OBJECT_QPOS_START + 21}), "
                         f"got {observations.shape}")
    reached = {}
    for name, qpos_index in indices.items():
        columns = OBJECT_QPOS_START + np.asarray(qpos_index) - FIRST_OBJECT_QPOS
        distance = np.linalg.norm(observations[:, columns] - goals[name], axis=1)
        reached[name] = bool((distance < threshold).any())
    return reached
