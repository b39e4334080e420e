"""Watchdog state machine driven by a fake clock: hold, damp, safe stop, recovery only by handshake."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from spaars_robot.safety.spec import WatchdogSpec
from spaars_robot.safety.watchdog import Watchdog, WatchdogState

PERIOD = 0.01  # 100 Hz; deadline defaults to one period


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(**spec) -> tuple[Watchdog, FakeClock]:
    clock = FakeClock()
    dog = Watchdog(WatchdogSpec(**spec), period_s=PERIOD, action_dim=2, clock=clock)
    return dog, clock


def fresh_period(dog: Watchdog, clock: FakeClock, action: list[float]):
    sent = clock.now
    clock.advance(0.002)
    command = dog.step(np.array(action), sent_at=sent)
    clock.advance(PERIOD - 0.002)
    return command


def missed_period(dog: Watchdog, clock: FakeClock, fallback=None):
    clock.advance(PERIOD)
    return dog.step(None, fallback_action=fallback)


def test_nothing_is_applied_before_the_handshake() -> None:
    dog, clock = make()
    command = fresh_period(dog, clock, [0.5, 0.5])
    assert dog.state is WatchdogState.WAIT_HANDSHAKE and not command.fresh
    np.testing.assert_allclose(command.action, [0, 0])


def test_hold_damp_safe_stop_then_recovery_only_after_handshake(caplog: pytest.LogCaptureFixture) -> None:
    dog, clock = make(damp_factor=0.5)
    dog.handshake_ok()
    assert fresh_period(dog, clock, [0.4, -0.2]).fresh
    with caplog.at_level(logging.WARNING, logger="spaars_robot.safety.watchdog"):
        hold = missed_period(dog, clock)
    assert hold.state is WatchdogState.HOLD
    np.testing.assert_allclose(hold.action, [0.4, -0.2])  # last safe action
    assert "missed deadline: no reply" in caplog.text
    assert missed_period(dog, clock).state is WatchdogState.HOLD
    damp = missed_period(dog, clock)  # third missed period in a row
    assert damp.state is WatchdogState.DAMP
    np.testing.assert_allclose(damp.action, [0.2, -0.1])
    np.testing.assert_allclose(missed_period(dog, clock).action, [0.1, -0.05])
    # A fresh reply does not end DAMP: only a handshake does.
    late_but_fresh = fresh_period(dog, clock, [0.9, 0.9])
    assert late_but_fresh.state is WatchdogState.DAMP and not late_but_fresh.fresh
    for _ in range(10):
        command = missed_period(dog, clock)
    assert command.state is WatchdogState.SAFE_STOP
    np.testing.assert_allclose(command.action, [0, 0])
    assert fresh_period(dog, clock, [0.3, 0.3]).state is WatchdogState.SAFE_STOP
    dog.handshake_ok()
    assert fresh_period(dog, clock, [0.3, 0.3]).state is WatchdogState.RUNNING
    states = [(t.previous.value, t.state.value) for t in dog.transitions]
    assert states == [("wait_handshake", "running"), ("running", "hold"), ("hold", "damp"),
                      ("damp", "safe_stop"), ("safe_stop", "running")]
    assert all(t.reason for t in dog.transitions)
    assert "no fresh reply for" in dog.transitions[3].reason


def test_hold_recovers_on_a_fresh_reply() -> None:
    dog, clock = make()
    dog.handshake_ok()
    fresh_period(dog, clock, [0.1, 0.1])
    assert missed_period(dog, clock).state is WatchdogState.HOLD
    command = fresh_period(dog, clock, [0.2, 0.2])
    assert command.state is WatchdogState.RUNNING and command.fresh
    assert dog.transitions[-1].reason == "fresh reply within deadline"


def test_stale_reply_is_never_applied() -> None:
    dog, clock = make()
    dog.handshake_ok()
    fresh_period(dog, clock, [0.1, 0.1])
    sent = clock.now
    clock.advance(PERIOD * 1.5)  # reply arrives after the deadline
    command = dog.step(np.array([0.9, 0.9]), sent_at=sent)
    assert not command.fresh and command.state is WatchdogState.HOLD
    np.testing.assert_allclose(command.action, [0.1, 0.1])
    assert dog.stale_replies == 1 and dog.deadline_misses == 1
    assert "stale reply" in dog.transitions[-1].reason
    assert not dog.is_fresh(sent)


def test_latent_hold_source_and_zero_damp() -> None:
    dog, clock = make(hold_source="latent", damp_mode="zero", damp_after_missed=2)
    dog.handshake_ok()
    fresh_period(dog, clock, [0.5, 0.5])
    hold = missed_period(dog, clock, fallback=np.array([-0.3, 0.2]))
    np.testing.assert_allclose(hold.action, [-0.3, 0.2])
    damp = missed_period(dog, clock, fallback=np.array([-0.3, 0.2]))
    assert damp.state is WatchdogState.DAMP
    np.testing.assert_allclose(damp.action, [0, 0])


def test_safe_stop_after_100ms_even_with_a_long_deadline() -> None:
    dog, clock = make(deadline_s=0.5, damp_after_missed=100)
    dog.handshake_ok()
    clock.advance(0.099)
    assert dog.step(None).state is WatchdogState.HOLD
    clock.advance(0.002)
    assert dog.step(None).state is WatchdogState.SAFE_STOP


def test_connection_lost_stops_immediately() -> None:
    dog, _clock = make()
    dog.handshake_ok()
    dog.connection_lost("server restarted")
    assert dog.state is WatchdogState.SAFE_STOP
    assert dog.transitions[-1].reason == "connection lost: server restarted"
