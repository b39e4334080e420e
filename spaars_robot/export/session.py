"""The onnxruntime session the runtime serves with, kept free of torch so `serve` starts without importing it."""
from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def make_session(path: Path | str) -> ort.InferenceSession:
    """A single-threaded CPU session: the default thread pool starves control loops (holosoma #211)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
