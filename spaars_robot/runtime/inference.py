"""The bundle's ONNX graph as a callable: one warmed-up, single-threaded onnxruntime session."""
from __future__ import annotations

import numpy as np

from spaars_robot.export.bundle import Bundle
from spaars_robot.export.manifest import OUTPUT_NAMES
from spaars_robot.export.session import make_session


class PolicyRunner:
    """obs [obs_dim] float32 -> (raw_action, latent_action, gate_advantage, support_score).

    The session is created once and warmed up, so the first real request does not pay for lazy
    allocations inside onnxruntime.
    """

    def __init__(self, bundle: Bundle, warmup: int = 200) -> None:
        self.obs_dim = bundle.manifest.observation.dim
        self.session = make_session(bundle.graph_path)
        self.input_name = bundle.manifest.graph.input_name
        self._outputs = list(OUTPUT_NAMES)
        self._batch = np.zeros((1, self.obs_dim), dtype=np.float32)
        for _ in range(warmup):
            self(self._batch[0])

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
        self._batch[0] = obs
        raw, latent, advantage, score = self.session.run(self._outputs, {self.input_name: self._batch})
        return raw[0], latent[0], float(advantage[0]), float(score[0])
