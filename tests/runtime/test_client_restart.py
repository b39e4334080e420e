"""The client survives a real server process dying and coming back, without ever blocking past its deadline."""
from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from spaars_robot.runtime.client import Client, DeadlineMissed, ServerUnavailable
from spaars_robot.runtime.server import ActionServer
from spaars_robot.runtime.sim_client import task_schema
from tests.runtime.runtime_helpers import free_port, serving, start_server_process

pytestmark = pytest.mark.timeout(60)


def act_until_ok(client: Client, obs: np.ndarray, within_s: float):
    """Retry like a control loop does (one request per 10 ms tick) until a reply arrives."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            return client.act(obs, timeout_s=0.01)
        except ServerUnavailable:
            time.sleep(0.01)
    raise AssertionError(f"no reply within {within_s} s")


def test_client_survives_server_restart(bundle, hopper):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    obs = np.zeros(11, np.float32)
    server = start_server_process(bundle.path, endpoint)
    try:
        with Client(endpoint, task_schema(hopper), timeout_s=0.01) as client:
            first = act_until_ok(client, obs, within_s=30)
            server.send_signal(signal.SIGKILL)
            server.wait()
            started = time.monotonic()
            with pytest.raises(DeadlineMissed):
                client.act(obs)
            assert time.monotonic() - started < 0.05  # the deadline bounds the wait: no wedged socket
            for _ in range(20):  # while down: every call fails fast (deadline or backoff), never hangs
                t = time.monotonic()
                with pytest.raises(ServerUnavailable):
                    client.act(obs)
                assert time.monotonic() - t < 0.05
            server = start_server_process(bundle.path, endpoint)
            second = act_until_ok(client, obs, within_s=30)
            assert np.array_equal(first.action, second.action)
            assert client.welcome is not None and client.sockets_built > 1 and client.timeouts >= 1
    finally:
        server.kill()
        server.wait()


class StallingServer(ActionServer):
    """A real server whose next `stall` requests are answered only after `delay_s` (a stalled process)."""

    stall = 0
    delay_s = 0.03

    def _act(self, *args, **kwargs):
        if self.stall > 0:
            self.stall -= 1
            time.sleep(self.delay_s)
        return super()._act(*args, **kwargs)


def test_one_late_reply_costs_one_request_and_a_dead_server_costs_the_socket(bundle, hopper):
    obs = np.zeros(11, np.float32)
    server = StallingServer(bundle, ["tcp://127.0.0.1:*"])
    with serving(server), Client(server.bound[0], task_schema(hopper), timeout_s=0.01, rebuild_after=3,
                                 rebuild_silence_s=0.02) as client:
        client.connect(timeout_s=5)
        expected = client.act(obs, timeout_s=1.0).action
        server.stall = 1
        with pytest.raises(DeadlineMissed):
            client.act(obs)
        time.sleep(0.05)  # the late reply arrives and waits on the socket
        reply = client.act(obs, timeout_s=1.0)  # same socket: the stale reply is dropped by sequence number
        assert np.array_equal(reply.action, expected)
        assert (client.sockets_built, client.handshakes, client.stale_replies) == (1, 1, 1)
        time.sleep(0.05)
        server.stall, server.delay_s = 3, 0.1  # three misses in a row with no reply at all: taken to be gone
        for _ in range(3):
            with pytest.raises(DeadlineMissed):
                client.act(obs)
        assert client.welcome is None and client.timeouts == 4
        time.sleep(0.15)
        reply = act_until_ok(client, obs, within_s=5)
        assert np.array_equal(reply.action, expected)
        assert client.sockets_built == 2 and client.handshakes == 2


class SlowHandshakeServer(ActionServer):
    """A real server whose handshakes take `delay_s`, longer than one request's deadline (as a fresh TCP
    connection plus `hello` is at 1 kHz: 0.45-0.75 ms here, BENCHMARKS.md)."""

    delay_s = 0.03
    hellos = 0

    def _hello(self, *args, **kwargs):
        self.hellos += 1
        time.sleep(self.delay_s)
        return super()._hello(*args, **kwargs)


def test_a_handshake_longer_than_one_deadline_completes_across_requests(bundle, hopper):
    """The hello stays pending on its socket while each request fails at its own deadline; once the welcome is in,
    requests are answered. Cut off at every deadline, each retry rebuilt the socket, sent a new hello that could
    never fit in 10 ms and doubled the backoff: a 1 kHz loop was locked out for most of a minute."""
    obs = np.zeros(11, np.float32)
    server = SlowHandshakeServer(bundle, ["tcp://127.0.0.1:*"])
    with serving(server), Client(server.bound[0], task_schema(hopper), timeout_s=0.01) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineMissed):
            client.act(obs)  # 10 ms: the welcome is still 20 ms away
        assert time.monotonic() - started < 0.05 and client.welcome is None
        reply = act_until_ok(client, obs, within_s=2)
        assert reply.action.shape == (3,)
        assert (client.sockets_built, client.handshakes, server.hellos) == (1, 1, 1)
        assert time.monotonic() - started < 0.5  # one pending hello, not a backoff towards 1 s


def test_a_handshake_unanswered_past_its_timeout_drops_the_socket(bundle, hopper):
    obs = np.zeros(11, np.float32)
    server = SlowHandshakeServer(bundle, ["tcp://127.0.0.1:*"])
    server.delay_s = 0.3
    with serving(server), Client(server.bound[0], task_schema(hopper), timeout_s=0.05,
                                 handshake_timeout_s=0.1) as client:
        for _ in range(2):  # pending: 50 ms, then 100 ms >= the handshake timeout -> dropped
            with pytest.raises(DeadlineMissed):
                client.act(obs)
        assert client._socket is None and client.welcome is None and client.sockets_built == 1
        server.delay_s = 0.0  # the server recovers: the rebuilt socket's hello is answered
        reply = act_until_ok(client, obs, within_s=5)
        # (the server still sleeps in the first hello for up to 0.3 s, so a second socket may time out too)
        assert reply.action.shape == (3,) and client.sockets_built >= 2 and client.handshakes == 1


def test_a_slow_server_whose_late_replies_arrive_keeps_its_socket(bundle, hopper):
    """Every reply 2 ms past its 10 ms deadline: each request misses, but a late reply arrives within every two
    requests and proves the server alive, so the socket (and its session) is kept instead of being rebuilt every
    third miss at 10 ms of backoff each."""
    obs = np.zeros(11, np.float32)
    server = StallingServer(bundle, ["tcp://127.0.0.1:*"])
    with serving(server), Client(server.bound[0], task_schema(hopper), timeout_s=0.01, rebuild_after=3) as client:
        client.connect(timeout_s=5)
        server.stall, server.delay_s = 10, 0.012
        for _ in range(10):
            with pytest.raises(DeadlineMissed):
                client.act(obs)
        assert client.timeouts == 10 and client.stale_replies >= 5
        assert client.sockets_built == 1 and client.welcome is not None and client.handshakes == 1


def test_a_rebuilt_socket_takes_over_its_own_session_slot(bundle, hopper):
    """70 rebuilds (more than the server's 64-session cap) by one client hold one session, not 70: the socket
    reconnects under the client's routing id. Each rebuild still starts a fresh session (new handshake)."""
    from spaars_robot.runtime.server import MAX_SESSIONS

    obs = np.zeros(11, np.float32)
    server = ActionServer(bundle, ["tcp://127.0.0.1:*"])
    with serving(server), Client(server.bound[0], task_schema(hopper), timeout_s=1.0) as client:
        sessions = set()
        for _ in range(MAX_SESSIONS + 6):
            client.close()  # what a rebuild does: drop the socket; the next request builds one and says hello
            client.act(obs)
            sessions.add(client.welcome.session)
        assert client.sockets_built == MAX_SESSIONS + 6 and len(sessions) == MAX_SESSIONS + 6
        assert len(server.sessions) == 1
        other = Client(server.bound[0], task_schema(hopper), timeout_s=1.0)
        with other:  # another client is a session of its own
            other.act(obs)
        assert len(server.sessions) == 2


def test_three_misses_shorter_than_the_silence_window_keep_the_socket(bundle, hopper):
    """A 60 ms stall at 10 ms deadlines: six misses with no reply, but under the default 100 ms of silence, so the
    socket and session survive the hiccup (at 1 kHz, rebuilding after 3 ms of silence cost more than it saved)."""
    obs = np.zeros(11, np.float32)
    server = StallingServer(bundle, ["tcp://127.0.0.1:*"])
    with serving(server), Client(server.bound[0], task_schema(hopper), timeout_s=0.01) as client:
        client.connect(timeout_s=5)
        server.stall, server.delay_s = 1, 0.06
        misses = 0
        for _ in range(5):
            try:
                client.act(obs)
            except DeadlineMissed:
                misses += 1
        assert misses >= 3 and client.sockets_built == 1 and client.welcome is not None
        assert act_until_ok(client, obs, within_s=2).action.shape == (3,) and client.sockets_built == 1
