"""Where a run's tensors live (`train --device auto|cpu|cuda`), and the random generators that go with them.

One rule keeps a run on one device: every network, optimiser state and buffer is created on (or moved to) the
run's device, and every random draw uses a generator of that device (a CUDA draw needs a CUDA generator; on the
CPU the streams are exactly the ones this project has always drawn, so CPU runs stay bit-identical).
`meta` is accepted too: it builds tensors without storage, which is how the tests check on a CPU-only machine
that a device choice reaches every network and buffer (tests/train/test_device.py).
"""
from __future__ import annotations

import hashlib

import torch

from spaars_robot.errors import SpaarsError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str) -> str:
    """`auto` -> cuda when a GPU is usable, else cpu; `cuda` without one is a one-line error (before any compute)."""
    if choice not in DEVICE_CHOICES:
        raise SpaarsError(f"--device {choice!r}: expected one of {', '.join(DEVICE_CHOICES)}")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SpaarsError("--device cuda: no CUDA GPU is usable here (torch.cuda.is_available() is False; this torch "
                          f"build is {torch.__version__}); use --device cpu or auto")
    return choice


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A seeded generator for random draws on `device`. `meta` has no generator of its own: a CPU one stands in
    (a meta build computes nothing, so it never draws)."""
    device = torch.device(device)
    return torch.Generator(device="cpu" if device.type == "meta" else device).manual_seed(seed)


def set_generator_state(generator: torch.Generator, state: torch.Tensor) -> bool:
    """Restore a checkpointed generator state; False when it was saved by a generator of another kind.

    A CPU generator's state (Mersenne Twister) cannot continue as a CUDA one (Philox) or back. A run resumed on
    another device then reseeds from a hash of the saved state: reproducible, but not the stream an uninterrupted
    run would have drawn.
    """
    try:
        generator.set_state(state)
        return True
    except RuntimeError:
        digest = hashlib.sha256(state.cpu().numpy().tobytes()).digest()
        generator.manual_seed(int.from_bytes(digest[:8], "little"))
        return False
