"""The bundle's ONNX graph as a callable: one warmed-up, single-threaded onnxruntime session.

Input and outputs are bound once to preallocated numpy buffers (onnxruntime IOBinding), so a request
allocates no output tensors: 0.93x the `session.run` call at batch 1 (BENCHMARKS.md, serving).
"""
from __future__ import annotations

import numpy as np

from spaars_robot.export.bundle import Bundle
from spaars_robot.export.manifest import OUTPUT_NAMES
from spaars_robot.export.session import make_session


class PolicyRunner:
    """obs [obs_dim] float32 -> (raw_action, latent_action, gate_advantage, support_score).

    The returned actions are fresh copies (the bound buffers are overwritten by the next call). The
    session is created once and warmed up, so the first real request does not pay for lazy
    allocations inside onnxruntime.
    """

    def __init__(self, bundle: Bundle, warmup: int = 200) -> None:
        manifest = bundle.manifest
        self.obs_dim = manifest.observation.dim
        self.session = make_session(bundle.graph_path)
        self._batch = np.zeros((1, self.obs_dim), dtype=np.float32)
        action_dim = manifest.action.dim
        self._raw = np.zeros((1, action_dim), dtype=np.float32)
        self._latent = np.zeros((1, action_dim), dtype=np.float32)
        self._advantage = np.zeros(1, dtype=np.float32)
        self._score = np.zeros(1, dtype=np.float32)
        self._binding = self.session.io_binding()
        self._binding.bind_cpu_input(manifest.graph.input_name, self._batch)
        for name, buffer in zip(OUTPUT_NAMES, (self._raw, self._latent, self._advantage, self._score), strict=True):
            self._binding.bind_output(name, "cpu", 0, np.float32, list(buffer.shape), buffer.ctypes.data)
        for _ in range(warmup):
            self(self._batch[0])

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
        self._batch[0] = obs
        self.session.run_with_iobinding(self._binding)
        return self._raw[0].copy(), self._latent[0].copy(), float(self._advantage[0]), float(self._score[0])
