"""What docs/protocol.md says the server does, checked on a real server over real ZeroMQ sockets (issue 17, 3).

Each case was found by a client written from the document alone and disagreed with the server before.
"""
from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq

from spaars_robot.runtime import protocol as p
from spaars_robot.runtime import server as server_module
from spaars_robot.runtime.client import Client
from spaars_robot.runtime.server import ActionServer
from spaars_robot.runtime.sim_client import task_schema
from spaars_robot.safety.limits import SafetyLayer
from spaars_robot.safety.spec import load_safety_spec
from tests.runtime.runtime_helpers import serving

pytestmark = pytest.mark.timeout(60)


def dealer(endpoint: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def exchange_frames(sock: zmq.Socket, frames: list[bytes]) -> list[bytes]:
    sock.send_multipart(frames)
    assert sock.poll(2000), "server did not answer"
    return sock.recv_multipart()


def hello_frame(hopper) -> bytes:
    return p.encode(p.Hello(schema=task_schema(hopper)))


@pytest.mark.parametrize("leading", [[b"x"], [b"a", b"b", b"c"], [b"\x00" * (p.MAX_FRAME_BYTES + 1)], [b"", b""]])
def test_a_multi_frame_request_is_malformed_and_no_leading_frame_is_echoed(live_server, hopper, leading):
    sock = dealer(live_server.bound[0])
    try:
        reply = exchange_frames(sock, [*leading, hello_frame(hopper)])
        assert len(reply) == 1, f"{len(reply)} frames came back; the document says one frame out"
        error = p.decode(reply[0])
        assert isinstance(error, p.ErrorReply) and error.code == p.MALFORMED and "one frame" in error.message
        assert not live_server.sessions  # nothing was handled
        # the documented forms still work on the same socket: one frame, or an empty delimiter then one frame
        assert isinstance(p.decode(exchange_frames(sock, [hello_frame(hopper)])[0]), p.Welcome)
        delimited = exchange_frames(sock, [b"", p.encode(p.Reset(seq=3))])
        assert delimited[0] == b"" and p.decode(delimited[1]) == p.ResetOk(3)
    finally:
        sock.close()


def test_error_seq_names_the_request_whenever_its_seq_was_readable(live_server, hopper):
    sock = dealer(live_server.bound[0])
    try:
        exchange_frames(sock, [hello_frame(hopper)])
        bad_obs = msgpack.packb({"v": 1, "type": "act", "seq": 41,
                                 "obs": {"dtype": "<f8", "shape": [11], "data": bytes(88)}})
        bad_watchdog = msgpack.packb({"v": 1, "type": "act", "seq": 42, "obs": p.encode_array(np.zeros(11)),
                                      "watchdog": {"state": "dancing", "deadline_misses": 0}})
        bad_type = msgpack.packb({"v": 1, "type": "teleport", "seq": 43})
        unreadable_seq = msgpack.packb({"v": 1, "type": "act", "seq": "44", "obs": p.encode_array(np.zeros(11))})
        for frame, seq in ((bad_obs, 41), (bad_watchdog, 42), (bad_type, 43), (unreadable_seq, None)):
            error = p.decode(exchange_frames(sock, [frame])[0])
            assert isinstance(error, p.ErrorReply) and error.code == p.MALFORMED
            assert error.seq == seq, (error, seq)
    finally:
        sock.close()


def test_welcome_echoes_the_hellos_seq_and_a_hello_without_one_is_served_as_in_1_2(live_server, hopper):
    sock = dealer(live_server.bound[0])
    try:
        numbered = p.decode(exchange_frames(sock, [p.encode(p.Hello(schema=task_schema(hopper), seq=7))])[0])
        assert isinstance(numbered, p.Welcome) and numbered.seq == 7 and numbered.version == (1, 4)
        plain = p.decode(exchange_frames(sock, [hello_frame(hopper)])[0])
        assert isinstance(plain, p.Welcome) and plain.seq is None
        assert "seq" not in msgpack.unpackb(p.encode(plain))
        refused = p.decode(exchange_frames(sock, [p.encode(p.Hello(schema=task_schema(hopper), seq=8,
                                                                   bundle_sha256="0" * 64))])[0])
        assert isinstance(refused, p.ErrorReply) and refused.code == p.BUNDLE_MISMATCH and refused.seq == 8
        bad = msgpack.unpackb(p.encode(p.Hello(schema=task_schema(hopper))))
        for wrong in ("9", 1.5, True):
            error = p.decode(exchange_frames(sock, [msgpack.packb({**bad, "seq": wrong})])[0])
            assert isinstance(error, p.ErrorReply) and error.code == p.MALFORMED and "'seq'" in error.message
    finally:
        sock.close()


def test_welcome_says_which_controller_the_bundle_deploys_and_serves_it(make_bundle, hopper):
    """1.4: a raw-only bundle (SPAR, IQL) says so in its welcome and answers raw whatever the gate thresholds say;
    a 1.3 welcome without the field reads as gated; an unknown controller is malformed."""
    bundle = make_bundle(controller="raw", gate_threshold=1e9)  # a gate that would never open
    with serving(ActionServer(bundle, ["tcp://127.0.0.1:*"])) as server, \
            Client(server.bound[0], task_schema(hopper), timeout_s=2.0) as client:
        welcome = client.connect()
        assert welcome.controller == "raw"
        assert {client.act(np.full(11, 0.01 * i, np.float32)).source for i in range(5)} <= {"raw", "fallback"}
    wire = msgpack.unpackb(p.encode(welcome))
    assert wire["gate"]["controller"] == "raw"
    del wire["gate"]["controller"]
    assert p.decode(msgpack.packb(wire)).controller == "gated"
    wire["gate"]["controller"] = "both"
    with pytest.raises(p.ProtocolError, match="gate.controller must be one of gated, raw, latent"):
        p.decode(msgpack.packb(wire))


def soft_zone_layer(on_out_of_bounds: str = "flag") -> SafetyLayer:
    """Hopper's spec with a wide soft zone, so most policy actions are shaped by it."""
    spec = load_safety_spec("hopper").model_copy(deep=True)
    spec.action.low, spec.action.high, spec.action.margin = -0.05, 0.05, 0.0
    spec.action.soft_zone, spec.action.soft_stiffness, spec.action.rate_limit = 0.04, 0.5, None
    spec.observation.on_out_of_bounds = on_out_of_bounds
    return SafetyLayer(spec, 3, 11)


def test_a_hold_repeats_the_previous_action_exactly(make_bundle, hopper):
    bundle = make_bundle(gate_threshold=-1e9)
    obs = np.random.default_rng(3).normal(0, 0.3, (20, 11)).astype(np.float32)
    with serving(ActionServer(bundle, ["tcp://127.0.0.1:*"], safety=soft_zone_layer())) as server, \
            Client(server.bound[0], task_schema(hopper), timeout_s=1.0) as client:
        shaped = next(r for r in (client.act(o) for o in obs) if "soft_zone" in r.limits)
        holds = [client.act(np.full(11, np.nan, np.float32)) for _ in range(4)]
    for held in holds:
        assert held.source == "hold" and held.limits == ()
        np.testing.assert_array_equal(held.action, shaped.action)  # no creep through the soft zone


def test_holds_by_the_safety_spec_are_reported_as_hold_and_flags_are_not_limits(make_bundle, hopper):
    bundle = make_bundle(gate_threshold=-1e9)
    inside = np.zeros(11, np.float32)
    outside = np.full(11, 50.0, np.float32)  # beyond hopper's observation bounds, but finite
    for mode in ("flag", "hold"):
        with serving(ActionServer(bundle, ["tcp://127.0.0.1:*"], safety=soft_zone_layer(mode))) as server, \
                Client(server.bound[0], task_schema(hopper), timeout_s=1.0) as client:
            first = client.act(inside)
            reply = client.act(outside)
            stats = server.stats()
        assert reply.observation_ood
        if mode == "flag":  # the action was not changed because of the observation: not a limit that acted
            assert "observation_bounds" not in reply.limits and reply.source != "hold"
        else:
            assert reply.source == "hold" and reply.limits == ("observation_bounds",)
            np.testing.assert_array_equal(reply.action, first.action)
            assert stats["hold"] == 1


def test_a_nan_policy_hold_is_reported_as_hold(make_bundle, hopper):
    bundle = make_bundle(gate_threshold=-1e9)

    class NaNPolicy(ActionServer):
        def _finalize(self, session, obs, action, decision):
            return super()._finalize(session, obs, np.full_like(action, np.nan) if obs[0] > 1 else action, decision)

    with serving(NaNPolicy(bundle, ["tcp://127.0.0.1:*"], safety=soft_zone_layer())) as server, \
            Client(server.bound[0], task_schema(hopper), timeout_s=1.0) as client:
        first = client.act(np.zeros(11, np.float32))
        reply = client.act(np.full(11, 2.0, np.float32))
    assert reply.source == "hold" and reply.limits == ("nonfinite",)
    np.testing.assert_array_equal(reply.action, first.action)


def test_at_the_session_cap_a_live_controller_is_never_evicted(bundle, hopper, monkeypatch):
    monkeypatch.setattr(server_module, "MAX_SESSIONS", 3)
    with serving(ActionServer(bundle, ["tcp://127.0.0.1:*"])) as server:
        endpoint = server.bound[0]
        controllers = [Client(endpoint, task_schema(hopper), timeout_s=1.0) for _ in range(3)]
        try:
            for c in controllers:
                c.connect()
                c.act(np.zeros(11, np.float32))
            intruder = dealer(endpoint)
            error = p.decode(exchange_frames(intruder, [hello_frame(hopper)])[0])
            assert isinstance(error, p.ErrorReply) and error.code == p.SESSION_LIMIT
            ids_before = sorted(s.id for s in server.sessions.values())
            for c in controllers:  # all three keep their sessions: no re-handshake needed
                assert c.act(np.zeros(11, np.float32)).source in p.SOURCES
            assert sorted(s.id for s in server.sessions.values()) == ids_before
            # once one controller has been silent past the idle limit, a newcomer takes its place
            monkeypatch.setattr(server_module, "SESSION_IDLE_EVICT_S", 0.0)
            welcome = p.decode(exchange_frames(intruder, [hello_frame(hopper)])[0])
            assert isinstance(welcome, p.Welcome) and len(server.sessions) == 3
            intruder.close()
        finally:
            for c in controllers:
                c.close()


def test_stats_count_every_request_over_the_servers_life(bundle, hopper):
    with serving(ActionServer(bundle, ["tcp://127.0.0.1:*"])) as server:
        for _ in range(3):  # three controllers, each dropping its session after 5 requests
            with Client(server.bound[0], task_schema(hopper), timeout_s=1.0) as client:
                for _ in range(5):
                    client.act(np.zeros(11, np.float32))
                client.act(np.full(11, np.nan, np.float32))
                client.forget_session()
                client.act(np.zeros(11, np.float32))
        stats = server.stats()
    assert stats["requests"] == 21
    assert sum(stats[s] for s in p.SOURCES) == 21 and stats["hold"] == 3


def test_a_reconnecting_controller_does_not_count_its_old_deadline_misses_again(bundle, hopper):
    reported: list[int] = []
    with serving(ActionServer(bundle, ["tcp://127.0.0.1:*"], on_watchdog=lambda state, n: reported.append(n))) \
            as server, Client(server.bound[0], task_schema(hopper), timeout_s=1.0, name="arm1") as client:
        obs = np.zeros(11, np.float32)
        client.act(obs, watchdog=p.WatchdogReport("running", 5))
        client.forget_session()  # a new handshake: a new server session for the same controller
        client.act(obs, watchdog=p.WatchdogReport("running", 5))
        client.act(obs, watchdog=p.WatchdogReport("running", 7))
    assert sum(reported) == 7  # 5 once, then 2 new ones; never 5 + 5 + 2
