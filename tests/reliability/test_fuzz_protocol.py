"""Fuzz the protocol decoder (in process) and the live server's handler (a real `serve` process).

Claims: the decoder raises nothing but ProtocolError; the server never crashes, answers every
malformed request with an `error` reply, and serves the next good request. NaN/inf observations of
the right shape are well-formed requests: they are answered with a `hold` action, never an error,
and never reach the networks.
"""
from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spaars_robot.runtime import protocol as p
from tests.reliability.reliability_helpers import OBS_DIM, RawPeer, ServeProcess

pytestmark = pytest.mark.timeout(240)
FUZZ = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck), derandomize=True)
GOOD_ACT = p.encode(p.Act(7, np.full(OBS_DIM, 0.1, np.float32)))

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=True),
                    st.text(max_size=12), st.binary(max_size=48))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def act_map(seq: object = 1, obs: object = None, v: object = p.PROTOCOL_MAJOR) -> dict:
    obs = obs if obs is not None else {"dtype": "<f4", "shape": [OBS_DIM], "data": bytes(4 * OBS_DIM)}
    return {"v": v, "type": "act", "seq": seq, "obs": obs}


@st.composite
def malformed_frames(draw) -> tuple[str, bytes]:
    """(category, frame): every frame here is a request the server must answer with an error."""
    kind = draw(st.sampled_from(["random_bytes", "truncated", "wrong_size", "wrong_dtype", "wrong_shape",
                                 "wrong_version", "wrong_types", "random_map", "not_a_map"]))
    if kind == "random_bytes":
        frame = draw(st.binary(min_size=0, max_size=256))
        try:  # random bytes that happen to be a valid request are not malformed; redraw those
            msg = p.decode(frame)
            if isinstance(msg, (p.Act, p.Hello, p.Reset)):
                frame = b"\xc1" + frame  # 0xc1 is never used in msgpack
        except p.ProtocolError:
            pass
    elif kind == "truncated":
        frame = GOOD_ACT[: draw(st.integers(0, len(GOOD_ACT) - 1))]
    elif kind == "wrong_size":
        n = draw(st.integers(0, 4 * OBS_DIM + 40).filter(lambda k: k != 4 * OBS_DIM))
        frame = msgpack.packb(act_map(obs={"dtype": "<f4", "shape": [OBS_DIM], "data": bytes(n)}))
    elif kind == "wrong_dtype":
        dtype = draw(st.sampled_from(["<f8", "<i4", ">f4", "float32", "f4", "", 4, None]))
        frame = msgpack.packb(act_map(obs={"dtype": dtype, "shape": [OBS_DIM], "data": bytes(4 * OBS_DIM)}))
    elif kind == "wrong_shape":
        shape = draw(st.lists(st.integers(0, 12), min_size=0, max_size=3).filter(lambda s: s != [OBS_DIM]))
        size = 4 * math.prod(shape)
        frame = msgpack.packb(act_map(obs={"dtype": "<f4", "shape": shape, "data": bytes(size)}))
    elif kind == "wrong_version":
        frame = msgpack.packb(act_map(v=draw(st.one_of(st.integers(-(2**63), 2**63 - 1).filter(lambda v: v != 1), st.text(max_size=3),
                                                        st.none()))))
    elif kind == "wrong_types":
        key = draw(st.sampled_from(["seq", "obs", "type"]))
        bad = draw(values.filter(lambda x: not isinstance(x, int) or isinstance(x, bool)) if key == "seq"
                   else values)
        m = act_map()
        m[key] = bad
        if key == "type" and bad in ("act", "hello", "reset"):
            m[key] = "nonsense"
        frame = msgpack.packb(m)
    elif kind == "random_map":
        m = draw(st.dictionaries(st.text(max_size=8), values, max_size=5))
        m["v"], m["type"] = p.PROTOCOL_MAJOR, draw(st.sampled_from(["act", "hello", "reset", "welcome", "action",
                                                                    "error", "reset_ok", "x"]))
        if m["type"] == "act":
            m.pop("seq", None)  # an act without seq can never be valid
        elif m["type"] in ("hello", "reset"):
            m["schema"] = m.get("schema") if not isinstance(m.get("schema"), dict) else None
            m.pop("seq", None)
        frame = msgpack.packb(m)
    else:
        frame = msgpack.packb(draw(st.one_of(scalars, st.lists(values, max_size=4))))
    return kind, frame


@given(frame=st.binary(max_size=512) | st.builds(lambda m: msgpack.packb(m), values))
@settings(FUZZ, max_examples=3000)
def test_decoder_raises_only_protocol_errors(frame: bytes) -> None:
    try:
        p.decode(frame)
    except p.ProtocolError:
        pass


def test_live_server_answers_every_malformed_request_and_keeps_serving(bundle_path, endpoint, figures) -> None:
    server = ServeProcess(bundle_path, endpoint)
    counts: dict[str, int] = {}
    peer = None
    try:
        server.ready()
        peer = RawPeer(endpoint)
        assert isinstance(peer.hello(), p.Welcome)

        @given(case=malformed_frames())
        @settings(FUZZ, max_examples=600)
        def fuzz(case: tuple[str, bytes]) -> None:
            kind, frame = case
            reply = peer.exchange([frame])
            assert reply is not None, f"no reply to a {kind} frame: the server hung or died"
            msg = p.decode(reply)
            assert isinstance(msg, p.ErrorReply), f"{kind} frame {frame[:40]!r} answered with {msg}"
            if kind == "wrong_version":  # another integer major: version_mismatch; no integer at all: malformed
                v = msgpack.unpackb(frame, raw=False)["v"]
                expected = p.VERSION_MISMATCH if isinstance(v, int) and not isinstance(v, bool) else p.MALFORMED
                assert msg.code == expected, (v, msg)
            counts[kind] = counts.get(kind, 0) + 1
            good = peer.good_act()  # the next good request is served
            if isinstance(good, p.ErrorReply) and good.code == p.UNKNOWN_CLIENT:
                assert isinstance(peer.hello(), p.Welcome)  # a fuzzed hello may have replaced the session
                good = peer.good_act()
            assert isinstance(good, p.ActionReply) and good.seq == peer.seq

        fuzz()
        # Huge frames: refused by size before unpacking, the connection stays usable.
        for size in (p.MAX_FRAME_BYTES + 1, 1 << 20, 8 << 20):
            msg = p.decode(peer.exchange([b"\x00" * size]))
            assert isinstance(msg, p.ErrorReply) and msg.code == p.MALFORMED and "exceeds" in msg.message
            assert isinstance(peer.good_act(), p.ActionReply)
            counts["huge"] = counts.get("huge", 0) + 1
        # NaN / inf observations of the right shape: a hold action, never an error.
        for value in (np.nan, np.inf, -np.inf):
            peer.seq += 1
            obs = np.full(OBS_DIM, 0.1, np.float32)
            obs[3] = value
            msg = p.decode(peer.exchange([p.encode(p.Act(peer.seq, obs))]))
            assert isinstance(msg, p.ActionReply) and msg.source == "hold" and np.isfinite(msg.action).all()
            counts["nonfinite_obs_hold"] = counts.get("nonfinite_obs_hold", 0) + 1
        # Extra frames in one message: one frame in, one frame out (docs/protocol.md), so it is malformed,
        # answered, and the next good request is served.
        msg = p.decode(peer.exchange([b"extra", GOOD_ACT]))
        assert isinstance(msg, p.ErrorReply) and msg.code == p.MALFORMED
        counts["extra_frames"] = counts.get("extra_frames", 0) + 1
        assert isinstance(peer.good_act(), p.ActionReply)
        assert server.proc.poll() is None, "the server process died"
        stats = server.stop()
    finally:
        if peer is not None:
            peer.close()
        server.kill()
    malformed = sum(v for k, v in counts.items() if k != "nonfinite_obs_hold")
    assert stats["errors"] >= malformed
    figures["fuzz"] = {"malformed_requests": malformed, "by_kind": counts, "error_replies": stats["errors"],
                       "server_crashes": 0, "good_requests_served_after_bad": stats["requests"],
                       "decoder_examples": 3000}
