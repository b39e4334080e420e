"""The bundle's ONNX graph as a callable: one warmed-up, single-threaded onnxruntime session.

Input and outputs are bound once to preallocated numpy buffers (onnxruntime IOBinding), so a request
allocates no output tensors: 0.93x the `session.run` call at batch 1 (BENCHMARKS.md, serving).
"""
from __future__ import annotations

import numpy as np

from spaars_robot.export.bundle import Bundle
from spaars_robot.export.manifest import OUTPUT_NAMES
from spaars_robot.export.session import make_session
from spaars_robot.export.skill_clock import SkillClock


class PolicyRunner:
    """obs [obs_dim] float32 -> (raw_action, latent_action, gate_advantage, support_score).

    The returned actions are fresh copies (the bound buffers are overwritten by the next call). The
    session is created once and warmed up, so the first real request does not pay for lazy
    allocations inside onnxruntime. A skill policy's bundle (manifest `skills`) also takes the client's
    SkillClock: the skill in force and whether to choose now go in, the skill used comes back into the clock.
    """

    def __init__(self, bundle: Bundle, warmup: int = 200) -> None:
        manifest = bundle.manifest
        self.obs_dim = manifest.observation.dim
        self.skills = manifest.skills
        self.session = make_session(bundle.graph_path)
        self._batch = np.zeros((1, self.obs_dim), dtype=np.float32)
        action_dim = manifest.action.dim
        self._raw = np.zeros((1, action_dim), dtype=np.float32)
        self._latent = np.zeros((1, action_dim), dtype=np.float32)
        self._advantage = np.zeros(1, dtype=np.float32)
        self._score = np.zeros(1, dtype=np.float32)
        self._binding = self.session.io_binding()
        self._binding.bind_cpu_input(manifest.graph.input_name, self._batch)
        outputs = [(name, buffer) for name, buffer in
                   zip(OUTPUT_NAMES, (self._raw, self._latent, self._advantage, self._score), strict=True)]
        if self.skills is not None:
            self._skill_in = np.zeros((1, self.skills.dim), dtype=np.float32)
            self._choose = np.zeros(1, dtype=np.float32)
            self._skill_out = np.zeros((1, self.skills.dim), dtype=np.float32)
            self._binding.bind_cpu_input(self.skills.input_name, self._skill_in)
            self._binding.bind_cpu_input(self.skills.choose_name, self._choose)
            outputs.append((self.skills.output_name, self._skill_out))
        for name, buffer in outputs:
            self._binding.bind_output(name, "cpu", 0, np.float32, list(buffer.shape), buffer.ctypes.data)
        warm_clock = self.new_skill_clock()
        for _ in range(warmup):
            self(self._batch[0], warm_clock)

    def new_skill_clock(self) -> SkillClock | None:
        """A fresh per-client skill state for this bundle (None when it is not a skill policy)."""
        return SkillClock.for_bundle(self.skills)

    def __call__(self, obs: np.ndarray, clock: SkillClock | None = None) -> tuple[np.ndarray, np.ndarray, float, float]:
        self._batch[0] = obs
        if self.skills is not None:
            if clock is None:
                raise ValueError("this bundle is a skill policy: pass the client's SkillClock")
            self._skill_in[0] = clock.skill
            self._choose[0] = 1.0 if clock.due else 0.0
        self.session.run_with_iobinding(self._binding)
        if clock is not None:
            clock.advance(self._skill_out[0])
        return self._raw[0].copy(), self._latent[0].copy(), float(self._advantage[0]), float(self._score[0])
