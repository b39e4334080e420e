"""Where in a maze the gate executed raw actions during online training (the paper's figure 3), as counts per place.

Per training period (the online budget cut into equal parts) and per map bin, the number of training steps taken
there and how many of them executed the raw policy. Counts rather than a trace: a few thousand integers per run,
so the compact summary that is committed carries them and `report` draws the map from committed summaries alone;
they add up over seeds. The recorder is part of the online checkpoint, so a resumed run counts every step once.
"""
from __future__ import annotations

import numpy as np
import torch

from spaars_robot.envs.maze import MazeGeometry

PERIODS = 4  # quarters of the online budget: the hand-over shows as the raw share growing from one to the next
BINS_PER_CELL = 2


class GateMapRecorder:
    def __init__(self, maze: MazeGeometry, position_obs: tuple[int, int], env_steps: int,
                 periods: int = PERIODS, per_cell: int = BINS_PER_CELL) -> None:
        self.maze, self.position_obs, self.env_steps = maze, tuple(position_obs), max(int(env_steps), 1)
        self.periods, self.per_cell = periods, per_cell
        rows, cols = maze.shape
        self.steps = np.zeros((periods, rows * per_cell, cols * per_cell), dtype=np.int64)
        self.raw = np.zeros_like(self.steps)

    def add(self, step: int, observation: np.ndarray, source: str) -> None:
        """Count one training step (`step` counted from 1) taken at `observation` by `source`."""
        period = min((step - 1) * self.periods // self.env_steps, self.periods - 1)
        (row,), (col,) = self.maze.bin_indices(np.asarray(observation)[list(self.position_obs)], self.per_cell)
        self.steps[period, row, col] += 1
        self.raw[period, row, col] += source == "raw"

    def state_dict(self) -> dict:
        """As tensors: checkpoints are read with torch.load(weights_only=True), which refuses numpy arrays."""
        return {"steps": torch.from_numpy(self.steps.copy()), "raw": torch.from_numpy(self.raw.copy())}

    def load_state_dict(self, state: dict) -> None:
        steps, raw = np.array(state["steps"], dtype=np.int64), np.array(state["raw"], dtype=np.int64)
        if steps.shape != self.steps.shape:
            raise ValueError(f"gate map of shape {steps.shape} in the checkpoint, this task's is {self.steps.shape}")
        self.steps, self.raw = steps, raw

    def summary(self) -> dict:
        """What the compact summary carries: enough to redraw the map (walls, cell size, bins) and sum over seeds."""
        return {"walls": self.maze.walls.astype(int).tolist(), "cell_size_m": self.maze.cell_size_m,
                "bins_per_cell": self.per_cell, "env_steps": self.env_steps,
                "steps": self.steps.tolist(), "raw": self.raw.tolist()}
