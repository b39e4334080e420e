"""The controller's own counts reach the server's telemetry: what the dashboard's "controller hold" and
"deadline misses" panels show, and the soft zone its action bars draw.

Only the controller knows how many periods it ran without a fresh reply (a held period may send nothing
that arrives), so it reports `ticks` and `held` next to `deadline_misses` in `act.watchdog`; the server
copies the latest report into every telemetry record (`controller`). Real server, real ZeroMQ, the
real ControlLoop with its watchdog.
"""
from __future__ import annotations

import msgpack
import numpy as np
import pytest

from spaars_robot.export.safety_binding import bind_spec
from spaars_robot.runtime import protocol as p
from spaars_robot.runtime.client import Client
from spaars_robot.runtime.server import ActionServer
from spaars_robot.runtime.sim_client import ControlLoop, task_schema
from spaars_robot.safety.limits import SafetyLayer
from spaars_robot.safety.spec import load_safety_spec
from spaars_robot.telemetry.record import TelemetryRecord
from tests.runtime.runtime_helpers import ACT_DIM, OBS_DIM, serving


def test_watchdog_report_counts_round_trip_and_stay_optional() -> None:
    obs = np.zeros(OBS_DIM, np.float32)
    act = p.decode(p.encode(p.Act(3, obs, p.WatchdogReport("hold", 4, ticks=90, held=7))))
    assert act.watchdog == p.WatchdogReport("hold", 4, ticks=90, held=7)
    bare = p.encode(p.Act(3, obs, p.WatchdogReport("running", 0)))  # a 1.1 controller: no new keys on the wire
    assert set(msgpack.unpackb(bare)["watchdog"]) == {"state", "deadline_misses"}
    assert p.decode(bare).watchdog == p.WatchdogReport("running", 0)
    for bad in ({"ticks": 5, "held": 6}, {"ticks": 5}, {"ticks": -1, "held": 0}, {"ticks": 5, "held": 1.0}):
        frame = msgpack.packb({"v": 1, "type": "act", "seq": 1, "obs": p.encode_array(obs),
                               "watchdog": {"state": "running", "deadline_misses": 0, **bad}})
        with pytest.raises(p.ProtocolError) as caught:
            p.decode(frame)
        assert caught.value.code == p.MALFORMED


def test_server_telemetry_carries_the_controllers_counts_and_the_soft_zone(bundle, hopper) -> None:
    spec = bind_spec(bundle.manifest, None).spec
    records: list[TelemetryRecord] = []
    server = ActionServer(bundle, ["tcp://127.0.0.1:*"], safety=SafetyLayer(spec, ACT_DIM, OBS_DIM),
                          telemetry=records.append)
    watchdog = load_safety_spec("hopper").watchdog
    rng = np.random.default_rng(0)
    with serving(server), Client(server.bound[0], task_schema(hopper), timeout_s=1.0, name="robot") as client:
        loop = ControlLoop(client, watchdog, 1 / 125, ACT_DIM)
        client.connect()
        for k in range(41):
            # Every 5th period the controller gives the server no time at all: its watchdog holds.
            tick = loop.tick(rng.normal(0, 0.1, OBS_DIM).astype(np.float32), 0.0 if k % 5 == 4 else 1.0)
    assert tick.fresh  # the last period got its reply, so its request (and report) reached the server
    held = loop.sources["hold"]
    assert held >= 8
    # The report rides on each request: the last record has the counts up to the period before it.
    assert records[-1].controller == {"ticks": 40, "held": held, "deadline_misses": loop.watchdog.deadline_misses}
    last = records[-1]
    assert {r.source for r in records} <= {"raw", "latent", "fallback"}  # the server itself never held
    hard_low, hard_high = spec.action.hard_bounds()
    soft = spec.action.vector("soft_zone")
    assert soft.max() > 0
    np.testing.assert_allclose(last.action_soft_low, hard_low + soft)
    np.testing.assert_allclose(last.action_soft_high, hard_high - soft)
    assert TelemetryRecord.from_msgpack(last.to_msgpack()) == last  # the new fields survive the wire
