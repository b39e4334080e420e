"""The latent -> gated transition trigger on synthetic signals."""
from __future__ import annotations

from spaars_robot.algos.transition import TransitionMonitor, relative_change
from spaars_robot.train.config import TransitionConfig

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
