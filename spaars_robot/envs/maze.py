"""The geometry of a maze task in world coordinates, so training can say where the gate acted and a report can draw it.

gymnasium-robotics lays a maze map (rows of 1 = wall, 0/r/g = free) out as square cells of `cell_size_m`, centred
on the origin, row 0 at the top (largest y): cell (row, col) has its centre at
x = (col + 0.5) * cell - width / 2, y = height / 2 - (row + 0.5) * cell (`Maze.cell_rowcol_to_xy`). This is that
formula, written once for the recorder (train/gate_map.py) and the figure (report/maze_figure.py), neither of which
should build a MuJoCo env to learn where the walls are.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spaars_robot.config.tasks import TaskSpec


@dataclass(frozen=True)
class MazeGeometry:
    walls: np.ndarray  # bool [rows, cols], True = wall cell
    cell_size_m: float

    @classmethod
    def of_task(cls, task: TaskSpec) -> MazeGeometry | None:
        """The task's maze, or None when the task has no map (every locomotion task)."""
        if task.map is None:
            return None
        rows = task.env_kwargs["maze_map"]  # the task validator checked it is there and rectangular
        walls = np.array([[cell == 1 for cell in row] for row in rows], dtype=bool)
        return cls(walls, task.map.cell_size_m)

    @property
    def shape(self) -> tuple[int, int]:
        return self.walls.shape

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(x_min, x_max, y_min, y_max) in metres: the whole map, outer walls included."""
        rows, cols = self.walls.shape
        half_w, half_h = cols * self.cell_size_m / 2, rows * self.cell_size_m / 2
        return -half_w, half_w, -half_h, half_h

    def bin_indices(self, xy: np.ndarray, per_cell: int) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) of each position in a grid of `per_cell` x `per_cell` bins per maze cell, row 0 at the top.

        Positions outside the map (an ant flipped over a wall's edge) are clipped into the border bins, so every
        step is counted somewhere.
        """
        xy = np.atleast_2d(np.asarray(xy, dtype=np.float64))
        x_min, _, _, y_max = self.extent
        rows, cols = self.walls.shape[0] * per_cell, self.walls.shape[1] * per_cell
        size = self.cell_size_m / per_cell
        col = np.clip(np.floor((xy[:, 0] - x_min) / size), 0, cols - 1).astype(np.int64)
        row = np.clip(np.floor((y_max - xy[:, 1]) / size), 0, rows - 1).astype(np.int64)
        return row, col

    def cell_of(self, xy: np.ndarray) -> tuple[int, int]:
        """The (row, col) cell a position is in (clipped into the map)."""
        row, col = self.bin_indices(xy, 1)
        return int(row[0]), int(col[0])

    def cell_centre(self, row: int, col: int) -> np.ndarray:
        """World x, y of a cell's centre (gymnasium-robotics' `cell_rowcol_to_xy`)."""
        x_min, _, _, y_max = self.extent
        return np.array([x_min + (col + 0.5) * self.cell_size_m, y_max - (row + 0.5) * self.cell_size_m])

    def free_cells(self) -> list[tuple[int, int]]:
        return [(int(r), int(c)) for r, c in zip(*np.nonzero(~self.walls))]

    def path(self, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
        """The shortest 4-connected path of free cells from start to goal, both included (breadth-first search).

        A start inside a wall (an ant pushed into a wall's cell) is allowed: the path leaves it to a free neighbour.
        Raises ValueError if the goal is a wall or cannot be reached.
        """
        if self.walls[goal]:
            raise ValueError(f"goal cell {goal} is a wall")
        previous: dict[tuple[int, int], tuple[int, int] | None] = {start: None}
        frontier = [start]
        while frontier and goal not in previous:
            nxt = []
            for r, c in frontier:
                for cell in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                    inside = 0 <= cell[0] < self.walls.shape[0] and 0 <= cell[1] < self.walls.shape[1]
                    if inside and not self.walls[cell] and cell not in previous:
                        previous[cell] = (r, c)
                        nxt.append(cell)
            frontier = nxt
        if goal not in previous:
            raise ValueError(f"no path from {start} to {goal}")
        route = [goal]
        while previous[route[-1]] is not None:
            route.append(previous[route[-1]])
        return route[::-1]

