"""The latent -> gated transition trigger on synthetic signals."""
from __future__ import annotations

import numpy as np
import pytest

from spaars_robot.algos.transition import TransitionMonitor, relative_change
from spaars_robot.config.training import TransitionConfig

CFG = TransitionConfig(t_min=20, t_max=100, window=4, plateau_eps=0.02, bc_error_max=0.01, max_gate_rate=0.5)


def feed(monitor, signals):
    out = None
    for step, (ret, nov, bc, gate) in signals:
        out = monitor.update(step, ret, nov, bc, gate)
    return out


def test_relative_change():
    assert abs(relative_change([5.0, 5.0, 5.0])) < 1e-12
    assert abs(relative_change([100.0, 110.0, 120.0]) - 20 / 110) < 1e-9


def test_switches_when_return_and_novelty_flat_and_calibrated():
    switch, reason = feed(TransitionMonitor(CFG), [(s, (1000.0, 0.5, 0.001, 0.1)) for s in range(10, 60, 10)])
    assert switch and "plateau" in reason


def test_no_switch_while_return_still_improving():
    signals = [(s, (1000.0 + 50 * i, 0.5, 0.001, 0.1)) for i, s in enumerate(range(10, 60, 10))]
    switch, reason = feed(TransitionMonitor(CFG), signals)
    assert not switch and "return improvement" in reason


def test_no_switch_while_novelty_still_falling():
    signals = [(s, (1000.0, 1.0 - 0.2 * i, 0.001, 0.1)) for i, s in enumerate(range(10, 60, 10))]
    switch, reason = feed(TransitionMonitor(CFG), signals)
    assert not switch and "novelty" in reason


def test_no_switch_when_raw_policy_not_calibrated():
    switch, reason = feed(TransitionMonitor(CFG), [(s, (1000.0, 0.5, 0.2, 0.1)) for s in range(10, 60, 10)])
    assert not switch and "bc error" in reason


def test_no_switch_when_gate_would_fire_wholesale():
    switch, reason = feed(TransitionMonitor(CFG), [(s, (1000.0, 0.5, 0.001, 0.9)) for s in range(10, 60, 10)])
    assert not switch and "gate rate" in reason


def test_t_min_blocks_and_t_max_forces():
    monitor = TransitionMonitor(CFG)
    assert feed(monitor, [(s, (1000.0, 0.5, 0.001, 0.1)) for s in (1, 5, 10, 15, 19)]) == (False, "before t_min=20")
    forced, reason = TransitionMonitor(CFG).update(100, 0.0, 9.0, 9.0, 1.0)
    assert forced and "t_max" in reason


def test_hard_cap_reports_where_each_check_stood():
    monitor = TransitionMonitor(CFG)
    feed(monitor, [(s, (1000.0, 0.5, 0.001, 0.1)) for s in (20, 40, 60)])
    forced, reason = monitor.update(100, 1000.0, 0.5, 0.2, 0.1)  # calibrated-policy check fails at the cap
    assert forced and "t_max=100" in reason
    assert "bc error 0.2000 < 0.01 FAILED" in reason and "gate rate 0.10 < 0.5 ok" in reason


def _decaying_novelty_run(reference: str):
    """Novelty falls 15 % per evaluation after a large untrained first value; return and calibration are flat."""
    cfg = CFG.model_copy(update={"novelty_reference": reference})
    novelty = [0.02] + [1e-5 * 0.85 ** i for i in range(5)]
    return feed(TransitionMonitor(cfg), [(10 * i, (1000.0, nov, 0.001, 0.1)) for i, nov in enumerate(novelty)])


def test_geometric_novelty_decay_is_never_flat_relative_to_its_own_window():
    switch, reason = _decaying_novelty_run("window")
    assert not switch and "novelty change" in reason


def test_geometric_novelty_decay_is_flat_relative_to_its_initial_level():
    switch, reason = _decaying_novelty_run("initial")
    assert switch and "plateau" in reason


# -- the evidence rule (issue 16): each check on signals shaped like the `short` runs' ----------------------
def _evidence_monitor(**overrides):
    from spaars_robot.config.training import TransitionConfig

    return TransitionMonitor(TransitionConfig(t_min=0, t_max=10**9, window=5, rule="evidence", **overrides))


def test_slope_t_separates_a_rise_from_noise():
    from spaars_robot.algos.transition import slope_t

    rng = np.random.default_rng(0)
    noise = rng.normal(0, 5.0, size=5)
    assert slope_t(list(80 + noise)) < 2.35  # flat + eval noise: not significant at 5 % (t quantile, 3 df)
    assert slope_t([60, 65, 70, 75, 80]) == np.inf
    assert slope_t(list(np.arange(5) * 10.0 + noise)) > 2.35  # a real rise stands out of the same noise
    with pytest.raises(ValueError):
        slope_t([1.0, 2.0])


def test_evidence_rule_fires_on_a_noisy_plateau_with_decayed_novelty_and_settled_bc():
    monitor = _evidence_monitor()
    returns = [70, 92, 85, 95, 88, 93]  # rose early, then scatter only
    novelty = [0.022, 0.004, 0.002, 0.001, 5e-4, 3e-4]  # geometric decay: never flat relative to itself
    bc = [0.30, 0.032, 0.031, 0.030, 0.031, 0.030]  # settled well above the 0.01 absolute threshold
    decisions = [monitor.update(i * 5000, r, n, b, 0.1) for i, (r, n, b) in enumerate(zip(returns, novelty, bc))]
    assert decisions[-1][0], decisions[-1][1]
    assert "not improving" in decisions[-1][1]


def test_evidence_rule_waits_while_the_return_still_rises_or_bc_still_falls():
    rising = _evidence_monitor()
    for i, r in enumerate([40, 50, 60, 70, 80, 90]):
        switch, reason = rising.update(i * 5000, r, 0.022 / (i + 1) ** 3, 0.03, 0.1)
    assert not switch and "return slope" in reason
    cloning = _evidence_monitor()
    for i, b in enumerate([0.5, 0.4, 0.3, 0.2, 0.1, 0.05]):
        switch, reason = cloning.update(i * 5000, 90.0 + (i % 2), 0.022 / (i + 1) ** 3, b, 0.1)
    assert not switch and "bc error" in reason


def test_evidence_state_round_trips_and_old_states_load():
    monitor = _evidence_monitor()
    for i in range(4):
        monitor.update(i * 5000, 80.0 + i % 2, 0.01 / (i + 1), 0.03, 0.1)
    restored = _evidence_monitor()
    restored.load_state_dict(monitor.state_dict())
    assert restored.state_dict() == monitor.state_dict()
    restored.load_state_dict({"returns": [1.0], "novelty": [0.1]})  # a checkpoint from before bc_errors
    assert restored.bc_errors == []
