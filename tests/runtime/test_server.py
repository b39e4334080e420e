"""The action server over real ZeroMQ sockets with real onnxruntime: handshake, errors, decisions, hooks."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq

from spaars_robot.runtime import protocol as p
from spaars_robot.runtime.client import Client
from spaars_robot.runtime.decision import DecisionState
from spaars_robot.runtime.server import ActionServer, EndpointError
from spaars_robot.runtime.sim_client import task_schema
from spaars_robot.safety.limits import LIMIT_KINDS, SafetyLayer, SafetyResult
from spaars_robot.safety.spec import load_safety_spec
from tests.conftest import REPO
from tests.runtime.runtime_helpers import serving, torch_outputs

pytestmark = pytest.mark.timeout(30)


def raw_exchange(endpoint: str, frame: bytes, timeout_ms: int = 2000) -> p.Message:
    """Send one hand-made frame on a fresh DEALER and decode the reply (bypasses Client's checks)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send(frame)
        assert sock.poll(timeout_ms), "server did not answer"
        return p.decode(sock.recv())
    finally:
        sock.close()


def test_handshake_accepts_matching_client(live_server, hopper, bundle):
    with Client(live_server.bound[0], task_schema(hopper), bundle_sha256=bundle.sha256) as client:
        welcome = client.connect()
    assert welcome.bundle_sha256 == bundle.sha256
    assert welcome.schema == live_server.schema and welcome.version[0] == p.PROTOCOL_MAJOR
    assert welcome.support_threshold == bundle.manifest.support.threshold


def test_handshake_refuses_wrong_version_schema_bundle_and_rate(live_server, hopper):
    endpoint = live_server.bound[0]
    schema = task_schema(hopper)
    hello = p.Hello(schema=schema, version=(p.PROTOCOL_MAJOR + 1, 0))
    reply = raw_exchange(endpoint, p.encode(hello))
    assert isinstance(reply, p.ErrorReply) and reply.code == p.VERSION_MISMATCH
    cases = [
        (p.Schema("hopper", schema.obs_names[:-1], schema.action_names, 125.0), None, "schema_mismatch"),
        (p.Schema("walker2d", schema.obs_names, schema.action_names, 125.0), None, "schema_mismatch"),
        (p.Schema("hopper", schema.obs_names, schema.action_names, 50.0), None, "rate_mismatch"),
        (schema, "f" * 64, "bundle_mismatch"),
    ]
    for bad_schema, sha, code in cases:
        with Client(endpoint, bad_schema, bundle_sha256=sha) as client, \
                pytest.raises(p.HandshakeRefused, match=code):
            client.connect()


def test_malformed_frames_get_error_replies_and_server_keeps_serving(live_server, hopper):
    endpoint = live_server.bound[0]
    obs = np.zeros(11, np.float32)
    bad_frames = {
        b"\xc1 not msgpack": p.MALFORMED,
        msgpack.packb([1, 2, 3]): p.MALFORMED,
        msgpack.packb({"v": 1, "type": "teleport"}): p.MALFORMED,
        p.encode(p.Act(1, obs)): p.UNKNOWN_CLIENT,  # no handshake on this connection
        b"\x00" * (p.MAX_FRAME_BYTES + 1): p.MALFORMED,
    }
    for frame, code in bad_frames.items():
        reply = raw_exchange(endpoint, frame)
        assert isinstance(reply, p.ErrorReply) and reply.code == code, (frame[:20], reply)
    with Client(endpoint, task_schema(hopper)) as client:
        client.connect()  # then hand-made frames on the same, handshaken connection
        wrong_dtype = msgpack.packb({"v": 1, "type": "act", "seq": 5,
                                     "obs": {"dtype": "<f8", "shape": [11], "data": bytes(88)}})
        wrong_shape = p.encode(p.Act(6, np.zeros(7, np.float32)))
        for frame, code, word in ((wrong_dtype, p.MALFORMED, "dtype"), (wrong_shape, p.BAD_OBSERVATION, "shape")):
            client._socket.send(frame)
            assert client._socket.poll(2000)
            reply = p.decode(client._socket.recv())
            assert reply.code == code and word in reply.message
        assert client.act(obs, timeout_s=1.0).source in p.SOURCES
    assert live_server.errors >= len(bad_frames) + 2


def test_reply_matches_torch_and_carries_decision_fields(live_server, hopper, stack):
    rng = np.random.default_rng(0)
    with Client(live_server.bound[0], task_schema(hopper), timeout_s=1.0) as client:
        for seq in range(1, 21):
            obs = (0.3 * rng.standard_normal(11)).astype(np.float32)
            reply = client.act(obs)
            raw, latent, advantage, score = (o[0] for o in torch_outputs(stack, obs[None]))
            expected = raw if reply.source == "raw" else latent
            assert np.abs(reply.action - expected).max() <= 1e-5
            assert abs(reply.gate_advantage - advantage) <= 1e-5 and abs(reply.support_score - score) <= 1e-5
            assert reply.seq == client._seq and reply.server_us >= reply.infer_us > 0


def test_nonfinite_observation_holds_the_last_action(live_server, hopper):
    with Client(live_server.bound[0], task_schema(hopper), timeout_s=1.0) as client:
        first = client.act(np.full(11, 0.1, np.float32))
        held = client.act(np.full(11, np.nan, np.float32))
    assert held.source == "hold" and np.array_equal(held.action, first.action)


def test_fallback_fires_when_raw_action_is_out_of_support(make_bundle, hopper, stack):
    """Gate always prefers raw; support threshold below every score: every answer is the latent fallback."""
    bundle = make_bundle(gate_threshold=-1e9, support_threshold=-1.0)
    obs = np.random.default_rng(1).normal(0, 0.3, (10, 11)).astype(np.float32)
    _, latent, _, _ = torch_outputs(stack, obs)
    with serving(ActionServer(bundle, ["tcp://127.0.0.1:*"])) as server, \
            Client(server.bound[0], task_schema(hopper), timeout_s=1.0) as client:
        replies = [client.act(o) for o in obs]
        assert server.stats()["fallbacks"] == 10
    assert [r.source for r in replies] == ["fallback"] * 10
    assert np.abs(np.stack([r.action for r in replies]) - latent).max() <= 1e-5
    assert replies[-1].fallbacks == 10


def test_support_hysteresis_holds_fallback_until_score_drops_below_band(make_bundle, hopper, stack):
    """High score enters fallback; a middle score keeps it (inside the band); a low score leaves it."""
    obs = np.random.default_rng(2).normal(0, 1.0, (400, 11)).astype(np.float32)
    scores = torch_outputs(stack, obs)[3]
    q = np.quantile(scores, [0.1, 0.3, 0.5, 0.7, 0.9])
    high, mid, low = obs[scores > q[4]][0], obs[(scores > q[1]) & (scores < q[3])][0], obs[scores < q[0]][0]
    # threshold at the 70 % quantile of the scores, band reaching down to the 30 % quantile
    bundle = make_bundle(gate_threshold=-1e9, support_threshold=float(q[3]), support_hysteresis=float(q[3] - q[1]))
    with serving(ActionServer(bundle, ["tcp://127.0.0.1:*"])) as server, \
            Client(server.bound[0], task_schema(hopper), timeout_s=1.0) as client:
        assert client.act(mid).source == "raw"  # below threshold from a clear state
        sources = [client.act(o).source for o in (high, mid, mid, low, mid)]
        client.reset()
        after_reset = client.act(mid).source
    assert sources == ["fallback", "fallback", "fallback", "raw", "raw"]
    assert after_reset == "raw"


def test_gate_latch_hysteresis_unit():
    state = DecisionState(gate_threshold=1.0, gate_hysteresis=0.5, support_threshold=np.inf, support_hysteresis=0)
    picks = [state.decide(adv, 0.0).source for adv in (0.9, 1.1, 0.7, 0.4, 0.9, float("nan"))]
    assert picks == ["latent", "raw", "raw", "latent", "latent", "latent"]


def test_a_bundle_of_one_controller_serves_it_on_every_step_and_the_support_monitor_still_vetoes_raw():
    """manifest gate.controller raw (a SPAR / IQL / TD3+BC run) or latent (latent-only, SUPE): whatever the
    advantage says; an out-of-support raw action still falls back."""
    advantages, scores = (-1e9, float("nan"), 1e9, -1e9), (0.0, 0.0, 0.0, 5.0)
    raw = DecisionState(gate_threshold=0.0, gate_hysteresis=0.0, support_threshold=1.0, support_hysteresis=0.0,
                        controller="raw")
    served = [raw.decide(a, s).source for a, s in zip(advantages, scores, strict=True)]
    assert served == ["raw", "raw", "raw", "fallback"]
    latent = DecisionState(gate_threshold=0.0, gate_hysteresis=0.0, support_threshold=1.0, support_hysteresis=0.0,
                           controller="latent")
    assert {latent.decide(a, s).source for a, s in zip(advantages, scores, strict=True)} == {"latent"}


def test_a_manifest_written_before_controller_existed_loads_as_it_served():
    """`gate.enabled: false` (SUPE bundles of earlier exports) is the latent controller, `true` the gate."""
    from spaars_robot.export.manifest import GateSpec

    assert GateSpec.model_validate({"threshold": 0.0, "hysteresis": 0.0, "enabled": False}).controller == "latent"
    assert GateSpec.model_validate({"threshold": 0.0, "hysteresis": 0.0, "enabled": True}).controller == "gated"
    assert GateSpec.model_validate({"threshold": 0.0, "hysteresis": 0.0}).controller == "gated"
    with pytest.raises(ValueError, match="gate.enabled must be true or false"):
        GateSpec.model_validate({"threshold": 0.0, "hysteresis": 0.0, "enabled": "no"})
    with pytest.raises(ValueError):
        GateSpec.model_validate({"threshold": 0.0, "hysteresis": 0.0, "controller": "both"})


def test_a_held_gate_is_asked_every_n_steps_while_the_support_monitor_judges_every_step():
    """gate_hold_steps 3 (a rollout gate fitted with --hold-steps 3): answers at steps 0, 3, 6 are held, and a reset
    asks afresh; a raw answer held through an out-of-support step still falls back there."""
    state = DecisionState(gate_threshold=0.0, gate_hysteresis=0.0, support_threshold=1.0, support_hysteresis=0.0,
                          gate_hold_steps=3)
    advantages = (1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0)
    scores = (0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0)
    picks = [state.decide(a, s).source for a, s in zip(advantages, scores, strict=True)]
    assert picks == ["raw", "raw", "fallback", "latent", "latent", "latent", "raw"]
    state.reset()
    assert [state.decide(a, 0.0).source for a in (-1.0, 1.0)] == ["latent", "latent"]
    plain = DecisionState(gate_threshold=0.0, gate_hysteresis=0.0, support_threshold=1.0, support_hysteresis=0.0)
    assert [plain.decide(a, 0.0).source for a in advantages[:5]] == ["raw", "latent", "latent", "latent", "raw"]


def test_finalize_and_telemetry_hooks_see_every_action(bundle, hopper):
    records = []

    class HalvingServer(ActionServer):
        def _finalize(self, session, obs, action, decision):
            return SafetyResult(0.5 * action, (), False)

    with serving(HalvingServer(bundle, ["tcp://127.0.0.1:*"], telemetry=records.append)) as server, \
            Client(server.bound[0], task_schema(hopper), timeout_s=1.0) as client:
        replies = [client.act(np.full(11, 0.05 * i, np.float32)) for i in range(5)]
    assert len(records) == 5
    for reply, record in zip(replies, records):
        assert np.allclose(reply.action, record.action) and record.sequence == reply.seq
        assert record.source == reply.source
        assert set(record.latency_us) == {"decode", "policy", "decide", "safety", "encode", "total"}


def test_safety_limits_act_on_every_reply_and_are_counted(make_bundle, hopper):
    """A tight spec (rate 0.05/step, bounds +-0.3): replies stay inside it, limits are named per reply,
    counted per kind in stats and telemetry, and a new handshake starts a fresh rate-limit history."""
    spec = load_safety_spec("hopper").model_copy(deep=True)
    spec.action.low, spec.action.high, spec.action.margin, spec.action.soft_zone = -0.3, 0.3, 0.0, 0.0
    spec.action.rate_limit = 0.05
    bundle = make_bundle(gate_threshold=-1e9)
    layer = SafetyLayer(spec, 3, 11)
    records = []
    obs = np.random.default_rng(4).normal(0, 1.0, (30, 11)).astype(np.float32)
    with serving(ActionServer(bundle, ["tcp://127.0.0.1:*"], telemetry=records.append, safety=layer)) as server, \
            Client(server.bound[0], task_schema(hopper), timeout_s=1.0) as client:
        replies = [client.act(o) for o in obs]
        stats = server.stats()
        client.forget_session()
        after_reconnect = client.act(obs[0])
    actions = np.stack([r.action for r in replies])
    assert np.abs(actions).max() <= 0.3 + 1e-6
    assert np.abs(np.diff(actions, axis=0)).max() <= 0.05 + 1e-6
    assert np.abs(actions[0]).max() <= 0.05 + 1e-6  # torque: rate limited from rest
    assert all("rate" in r.limits for r in replies[:3])
    counted = {kind: sum(kind in r.limits for r in replies) for kind in LIMIT_KINDS}
    assert stats["limits"] == counted and counted["rate"] > 0
    assert [r.limits for r in records[:30]] == [list(r.limits) for r in replies]
    assert np.abs(after_reconnect.action).max() <= 0.05 + 1e-6  # fresh session: from rest again


def test_nonfinite_reject_policy_answers_an_error_and_keeps_serving(bundle, hopper, stack):
    """Under `nonfinite: reject` a NaN action is refused with `unsafe_action`, never sent."""
    spec = load_safety_spec("hopper").model_copy(update={"nonfinite": "reject"})
    layer = SafetyLayer(spec, 3, 11)

    class NaNPolicy(ActionServer):
        def _finalize(self, session, obs, action, decision):
            return super()._finalize(session, obs, np.full_like(action, np.nan) if obs[0] > 1 else action, decision)

    with serving(NaNPolicy(bundle, ["tcp://127.0.0.1:*"], safety=layer)) as server, \
            Client(server.bound[0], task_schema(hopper), timeout_s=1.0) as client:
        with pytest.raises(p.ServerError, match="unsafe_action"):
            client.act(np.full(11, 2.0, np.float32))
        assert client.act(np.zeros(11, np.float32)).action.shape == (3,)


def test_ipc_endpoint_and_non_loopback_refused(bundle, hopper, tmp_path):
    with pytest.raises(EndpointError, match="refusing to bind"):
        ActionServer(bundle, ["tcp://0.0.0.0:5555"])
    with pytest.raises(EndpointError, match="refusing to bind"):
        ActionServer(bundle, ["tcp://*:5555"])
    with serving(ActionServer(bundle, [f"ipc://{tmp_path}/s.sock"])) as server, \
            Client(server.bound[0], task_schema(hopper), timeout_s=1.0) as client:
        assert client.act(np.zeros(11, np.float32)).action.shape == (3,)


def _has_ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine's kernel has no IPv6 loopback (::1) at all")
def test_ipv6_loopback_endpoint_binds_and_serves(bundle, hopper):
    """docs/protocol.md documents tcp://[::1]:PORT; it used to fail with "No such device" (issue 17)."""
    with serving(ActionServer(bundle, ["tcp://[::1]:*"])) as server:
        assert server.bound[0].startswith("tcp://[::1]:")
        with Client(server.bound[0], task_schema(hopper), timeout_s=1.0) as client:
            assert client.act(np.zeros(11, np.float32)).action.shape == (3,)


def _hello_frame(schema: p.Schema, **changes) -> bytes:
    """A hello as the wire carries it, with schema fields or top-level fields replaced (None: removed)."""
    body = msgpack.unpackb(p.encode(p.Hello(schema=schema)), raw=False)
    for key, value in changes.items():
        target = body if key in ("v",) else body["schema"]
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return msgpack.packb(body)


@pytest.mark.parametrize(("changes", "code"), [
    ({"obs_dim": 12}, p.SCHEMA_MISMATCH), ({"obs_dim": 0}, p.SCHEMA_MISMATCH), ({"obs_dim": -1}, p.SCHEMA_MISMATCH),
    ({"action_dim": 4}, p.SCHEMA_MISMATCH), ({"action_dim": 0}, p.SCHEMA_MISMATCH),
    ({"action_dim": -3}, p.SCHEMA_MISMATCH),
    ({"obs_dim": None}, p.MALFORMED), ({"obs_dim": "11"}, p.MALFORMED), ({"obs_dim": True}, p.MALFORMED),
    ({"control_rate_hz": float("nan")}, p.MALFORMED), ({"control_rate_hz": float("inf")}, p.MALFORMED),
    ({"control_rate_hz": 0.0}, p.MALFORMED),
    ({"v": None}, p.MALFORMED), ({"v": "1"}, p.MALFORMED), ({"v": 1.0}, p.MALFORMED),
])
def test_hello_with_inconsistent_dims_rate_or_version_field_is_refused_as_documented(live_server, hopper, changes,
                                                                                      code):
    """docs/protocol.md: different dims -> schema_mismatch; wrong field types -> malformed (issue 17, section 3)."""
    reply = raw_exchange(live_server.bound[0], _hello_frame(task_schema(hopper), **changes))
    assert isinstance(reply, p.ErrorReply) and reply.code == code, reply
    assert not live_server.sessions  # a refused hello creates no session


def test_a_nan_support_score_counts_as_out_of_support_in_the_server_and_in_training():
    """One rule (algos/latch.monitor_support) for both monitors: NaN is the worst case, a finite score in range passes."""
    from spaars_robot.algos.latch import Latch, monitor_support

    state = DecisionState(gate_threshold=0.0, gate_hysteresis=0.0, support_threshold=1.0, support_hysteresis=0.0)
    assert state.decide(1.0, float("nan")).source == "fallback"
    state.reset()
    assert state.decide(1.0, 0.5).source == "raw"
    latch = Latch(1.0, 0.0)
    assert monitor_support(latch, float("nan")) and not monitor_support(latch, 0.5)


def test_joint_limits_bound_each_reply_by_the_observed_joint_state(make_bundle, hopper):
    """`safety/hopper-joint-limits.yaml` over a real socket: the same commanded torques pass untouched with the knee
    mid-range and are turned into a braking torque with the knee on its soft limit moving towards it; the reply
    names `joint_limits`, and the server counts it."""
    layer = SafetyLayer(load_safety_spec(REPO / "safety" / "hopper-joint-limits.yaml"), 3, 11)

    class PushKnee(ActionServer):
        def _finalize(self, session, obs, action, decision):
            return super()._finalize(session, obs, np.array([0.0, 0.9, 0.0]), decision)

    mid = np.zeros(11, np.float32)
    mid[2:5] = [-1.0, -1.0, 0.0]
    at_limit = mid.copy()
    at_limit[3], at_limit[9] = -0.08, 2.0  # knee past its soft upper limit (-0.0873), still extending at 2 rad/s
    with serving(PushKnee(make_bundle(), ["tcp://127.0.0.1:*"], safety=layer)) as server, \
            Client(server.bound[0], task_schema(hopper), timeout_s=1.0) as client:
        free = client.act(mid)
        braked = client.act(at_limit)
        stats = server.stats()
    assert list(free.limits) == [] and free.action[1] == pytest.approx(0.9)
    # v allowed = -25 * (-0.08 + 0.0873) = -0.18 rad/s; bound 0.2 * (-0.18 - 2.0) = -0.44, 1.34 below the last
    # torque: the rate limit (1.0 per step) would stop at -0.1, and the bound wins over smoothness
    assert list(braked.limits) == ["joint_limits", "rate"] and braked.action[1] == pytest.approx(-0.4365, abs=1e-3)
    assert stats["limits"]["joint_limits"] == 1
