"""When SPAARS hands control from the latent policy to the gated raw policy (methods.md 6.4).

The paper keys the switch to an "RND plateau" (Definition 1) and to the raw policy's calibration
(Proposition 3). We switch at the first evaluation after `t_min` where the evaluation return and the
RND novelty of visited states are both flat over the last `window` evaluations, the raw policy's
BC error against the decoded latent actions is below `bc_error_max`, and the gate would fire on less
than `max_gate_rate` of recent states; at `t_max` it switches regardless.

That `relative` rule never fired in the committed `short` runs (a decaying RND signal never looks flat relative to
itself; concurrent BC never reaches 0.01). The `evidence` rule asks what each signal can actually show: the return
has stopped improving beyond what the evaluations' own scatter explains (a one-sided t-test on the window's
least-squares slope), novelty has fallen well below its first value (Definition 1's plateau), and the BC error has
stopped falling (its own trend, not an absolute level it may never reach).
"""
from __future__ import annotations

import numpy as np

from spaars_robot.config.training import TransitionConfig

# The evaluation record's fields that TransitionMonitor.update reads, in its argument order. The runner logs them
# in metrics.csv and the summary's curve, which is all `transition replay` needs to re-decide a run's switch.
TRANSITION_SIGNALS = ("return_mean", "novelty", "bc_error", "gate_rate_recent")
# How a switch forced by t_max begins its reason (the report tells a cap from a decision on evidence by it).
CAP_REASON = "hard cap"


def slope_t(values: list[float]) -> float:
    """t statistic of the least-squares slope of `values` against their index (residual-based standard error).

    The residual scatter around the fitted line is the evaluations' own noise, so a slope is called an
    improvement only when it stands out of it. +/-inf when the points lie exactly on a sloped line.
    """
    y = np.asarray(values, dtype=np.float64)
    if len(y) < 3:
        raise ValueError("a slope test needs at least 3 points")
    x = np.arange(len(y), dtype=np.float64)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    tiny = 1e-12 * max(1.0, float(np.abs(y).max()))
    se = float(np.sqrt((residual ** 2).sum() / (len(y) - 2) / ((x - x.mean()) ** 2).sum()))
    if se <= tiny:
        return float(np.sign(slope) * np.inf) if abs(slope) > tiny else 0.0
    return float(slope / se)


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
        self.bc_errors: list[float] = []

    def check(self, step: int, eval_return: float, signals: dict) -> dict | None:
        """Record one evaluation's signals (novelty, bc_error, gate_rate_recent) and note the check in `signals`.

        Returns the switch-log entry (step, reason, the signals, the thresholds) when it is time to switch, and
        marks `signals["switched"]`; None otherwise. SPAARS and SPAARS-SUPE log their switch through this alone.
        """
        switch, reason = self.update(step, eval_return, signals["novelty"], signals["bc_error"],
                                     signals["gate_rate_recent"])
        signals["transition_check"] = reason
        if not switch:
            return None
        entry = {"step": step, "reason": reason, **signals, "thresholds": self.config.model_dump(mode="json")}
        signals["switched"] = reason
        return entry

    def update(self, step: int, eval_return: float, novelty: float, bc_error: float,
               gate_rate: float) -> tuple[bool, str]:
        """Record one evaluation's signals; return (switch now?, reason or why not)."""
        cfg = self.config
        self.returns.append(eval_return)
        self.novelty.append(novelty)
        self.bc_errors.append(bc_error)
        checks = self._checks(bc_error, gate_rate) if step >= cfg.t_min and len(self.returns) >= cfg.window else {}
        summary = "; ".join(f"{name} {'ok' if ok else 'FAILED'}" for name, ok in checks.items())
        if step >= cfg.t_max:  # the hard cap still records where every check stood
            return True, f"{CAP_REASON} t_max={cfg.t_max} reached at step {step}" + (f"; checks: {summary}" if checks else "")
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
        if self.config.rule == "evidence":
            return self._evidence_checks(bc_error, gate_rate)
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

    def _evidence_checks(self, bc_error: float, gate_rate: float) -> dict[str, bool]:
        from scipy.stats import t as student_t

        cfg = self.config
        window = self.returns[-max(cfg.window, 3):]
        t_slope = slope_t(window)
        t_crit = float(student_t.ppf(1.0 - cfg.significance, len(window) - 2))
        novelty_ratio = self.novelty[-1] / max(abs(self.novelty[0]), 1e-12)
        bc_window = self.bc_errors[-max(cfg.window, 2):]
        bc_change = relative_change(bc_window)
        bc_settled = abs(bc_change) < cfg.bc_trend_eps or bc_error < cfg.bc_error_max
        return {
            f"return slope t {t_slope:+.2f} < {t_crit:.2f} (not improving beyond eval noise)": t_slope < t_crit,
            f"novelty {novelty_ratio:.3f} x initial < {cfg.novelty_drop}": novelty_ratio < cfg.novelty_drop,
            f"bc error {bc_error:.4f} settled (change {bc_change:+.3f}, |.| < {cfg.bc_trend_eps}) "
            f"or < {cfg.bc_error_max}": bc_settled,
            f"gate rate {gate_rate:.2f} < {cfg.max_gate_rate}": gate_rate < cfg.max_gate_rate,
        }

    def state_dict(self) -> dict:
        return {"returns": list(self.returns), "novelty": list(self.novelty), "bc_errors": list(self.bc_errors)}

    def load_state_dict(self, state: dict) -> None:
        self.returns, self.novelty = list(state["returns"]), list(state["novelty"])
        self.bc_errors = list(state.get("bc_errors", []))  # absent in checkpoints before the evidence rule
