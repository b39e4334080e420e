"""When SPAARS hands control from the latent policy to the gated raw policy (methods.md 6.4).

The paper keys the switch to an "RND plateau" (Definition 1) and to the raw policy's calibration
(Proposition 3). We switch at the first evaluation after `t_min` where the evaluation return and the
RND novelty of visited states are both flat over the last `window` evaluations, the raw policy's
BC error against the decoded latent actions is below `bc_error_max`, and the gate would fire on less
than `max_gate_rate` of recent states; at `t_max` it switches regardless.
"""
from __future__ import annotations

import numpy as np

from spaars_robot.config.training import TransitionConfig


def relative_change(values: list[float], reference: float | None = None) -> float:
    """Least-squares change across the window relative to `reference` (default: the window's mean magnitude).

    Relative to the window's own mean, a signal that decays geometrically toward zero never looks flat:
    RND novelty of visited states does exactly that while its predictor keeps fitting (hopper `short` runs:
    0.022 before training, ~1e-5 and still falling 10-20 % per evaluation after). Hence the option to
    measure it against its first value (`novelty_reference: initial`).
    """
    y = np.asarray(values, dtype=np.float64)
    x = np.arange(len(y), dtype=np.float64)
    slope = np.polyfit(x, y, 1)[0] if len(y) > 1 else 0.0
    scale = abs(y.mean()) if reference is None else abs(reference)
    return float(slope * (len(y) - 1) / max(scale, 1e-8))


class TransitionMonitor:
    def __init__(self, config: TransitionConfig) -> None:
        self.config = config
        self.returns: list[float] = []
        self.novelty: list[float] = []

    def update(self, step: int, eval_return: float, novelty: float, bc_error: float,
               gate_rate: float) -> tuple[bool, str]:
        """Record one evaluation's signals; return (switch now?, reason or why not)."""
        cfg = self.config
        self.returns.append(eval_return)
        self.novelty.append(novelty)
        checks = self._checks(bc_error, gate_rate) if step >= cfg.t_min and len(self.returns) >= cfg.window else {}
        summary = "; ".join(f"{name} {'ok' if ok else 'FAILED'}" for name, ok in checks.items())
        if step >= cfg.t_max:  # the hard cap still records where every check stood
            return True, f"hard cap t_max={cfg.t_max} reached at step {step}" + (f"; checks: {summary}" if checks else "")
        if step < cfg.t_min:
            return False, f"before t_min={cfg.t_min}"
        if not checks:
            return False, f"fewer than {cfg.window} evaluations"
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            return False, "not yet: " + "; ".join(failed)
        return True, "plateau and calibration: " + "; ".join(checks)

    def _checks(self, bc_error: float, gate_rate: float) -> dict[str, bool]:
        """Each switch condition, named with its measured value and its threshold, -> whether it holds."""
        cfg = self.config
        return_change = relative_change(self.returns[-cfg.window:])
        reference = self.novelty[0] if cfg.novelty_reference == "initial" else None
        novelty_change = abs(relative_change(self.novelty[-cfg.window:], reference))
        return {
            f"return improvement {return_change:+.3f} < {cfg.plateau_eps}": return_change < cfg.plateau_eps,
            f"novelty change {novelty_change:.3f} < {cfg.plateau_eps}": novelty_change < cfg.plateau_eps,
            f"bc error {bc_error:.4f} < {cfg.bc_error_max}": bc_error < cfg.bc_error_max,
            f"gate rate {gate_rate:.2f} < {cfg.max_gate_rate}": gate_rate < cfg.max_gate_rate,
        }

    def state_dict(self) -> dict:
        return {"returns": list(self.returns), "novelty": list(self.novelty)}

    def load_state_dict(self, state: dict) -> None:
        self.returns, self.novelty = list(state["returns"]), list(state["novelty"])
