"""Deployed experience back into training: serve --record + sim -> `data import x.mcap` -> `train`.

The controller (`spaars-robot sim`'s loop) sends its reward and termination with each observation
(protocol 1.2 `act.outcome`), the server records them, and the importer rebuilds the episodes. The
round trip is checked against MuJoCo itself: replaying the imported actions from each episode's seed
reproduces the imported observations and rewards exactly.
"""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spaars_robot.config.tasks import load_task
from spaars_robot.data.episodes import iter_episodes, read_metadata
from spaars_robot.envs import make_env
from spaars_robot.export.onnx_export import export_bundle
from spaars_robot.export.stack import random_stack
from spaars_robot.runtime import protocol as p
from spaars_robot.runtime.client import Client
from spaars_robot.runtime.service import wait_for_server
from spaars_robot.runtime.sim_client import run_sim, task_schema
from spaars_robot.telemetry.mcap_log import McapRecorder
from tests.conftest import run_cli
from tests.runtime.runtime_helpers import free_port, hopper_info
from tests.telemetry.telemetry_helpers import make_record

pytestmark = pytest.mark.timeout(400)
# (first seed, episodes, max steps): this random policy falls after ~26 steps, so the first run's episodes
# end by termination and the second run's by truncation (the controller's step limit)
RUNS = [(7, 2, 60), (9, 1, 15)]


def _serve(bundle: Path, endpoint: str, recording: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "spaars_robot.cli", "serve", "--bundle", str(bundle), "--bind",
                             endpoint, "--record", str(recording)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_recorded_deployment_imports_and_trains(tmp_path: Path) -> None:
    task = load_task("hopper")
    bundle, recording = tmp_path / "bundle", tmp_path / "logs" / "deployed.mcap"
    export_bundle(random_stack(11, 3, seed=0), hopper_info(), bundle)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    server = _serve(bundle, endpoint, recording)
    try:
        with Client(endpoint, task_schema(task), timeout_s=2.0, name="sim") as client:
            wait_for_server(client, server)
            summaries = [run_sim(client, task, episodes, seed, realtime=False, max_steps=max_steps, timeout_s=2.0)
                         for seed, episodes, max_steps in RUNS]
            # an old (1.1) controller on the same server: no outcome, so its requests add no transition
            client.forget_session()
            client.act(np.zeros(11, np.float32))
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert all(s.deadline_misses == 0 and s.source_share["hold"] == 0.0 for s in summaries)
    played = [(seed + i, max_steps, result) for (seed, _, max_steps), s in zip(RUNS, summaries, strict=True)
              for i, result in enumerate(s.episodes)]
    assert {result.steps < max_steps for _, max_steps, result in played} == {True, False}  # falls and cuts

    root = tmp_path / "datasets"
    proc = run_cli("data", "import", str(recording), "--task", "hopper", "--root", str(root))
    out = root / "spaars" / "deployed-deployed-v0"
    assert "deployed-deployed-v0" in proc.stdout
    assert read_metadata(out)["spaars_source_format"] == "mcap"
    episodes = list(iter_episodes(out))
    assert [len(e) for e in episodes] == [result.steps for *_, result in played]  # every step, the last included
    env = make_env(task)
    try:
        for episode, (seed, max_steps, result) in zip(episodes, played, strict=True):
            obs, _ = env.reset(seed=seed)
            np.testing.assert_array_equal(episode.observations[0], obs.astype(np.float32))
            for t, action in enumerate(episode.actions):
                obs, reward, terminated, truncated, _ = env.step(action)
                np.testing.assert_array_equal(episode.observations[t + 1], obs.astype(np.float32))
                assert episode.rewards[t] == np.float32(reward)
                assert episode.terminations[t] == terminated
            fell = result.steps < max_steps
            assert episode.terminations[-1] == fell and episode.truncations[-1] == (not fell)
            assert not episode.terminations[:-1].any() and not episode.truncations[:-1].any()
            assert episode.episode_return == pytest.approx(result.episode_return, rel=1e-5)
    finally:
        env.close()

    runs = tmp_path / "runs"
    run_cli("train", "--task", "hopper", "--dataset", str(out), "--algo", "iql", "--protocol", "smoke",
            "--runs-root", str(runs), "--results-dir", str(tmp_path / "results"),
            env={"SPAARS_CACHE": str(tmp_path / "cache")})
    (metrics,) = runs.glob("*/seed0/metrics.csv")
    assert len(metrics.read_text().strip().splitlines()) == 1 + 4  # header + evaluations at 0, 200, 400, 600


def _write(path: Path, records) -> Path:
    recorder = McapRecorder(path)
    for record in records:
        recorder.write(record)
    recorder.close()
    return path


def _import_error(path: Path, tmp_path: Path, task: str = "hopper") -> str:
    proc = run_cli("data", "import", str(path), "--task", task, "--root", str(tmp_path / "ds"), check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "ds" / "spaars").exists() or not any((tmp_path / "ds" / "spaars").iterdir())
    return proc.stderr


def _episode_records(obs_dim: int, steps: int = 4) -> list:
    return [make_record(i, observation=[0.1 * i] * obs_dim, policy_action=[0.0] * 3,
                        **({} if i == 0 else {"episode_step": i, "reward": 1.0, "terminated": i == steps,
                                              "truncated": False, "applied_action": [0.1, 0.2, 0.3]}))
            for i in range(steps + 1)]


def test_bad_recordings_are_one_line_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"\x89MCAP0\r\n" + bytes(100))
    assert "not a readable MCAP" in _import_error(junk, tmp_path)
    cut = _write(tmp_path / "cut.mcap", _episode_records(11))
    cut.write_bytes(cut.read_bytes()[:-200])
    assert "record recover" in _import_error(cut, tmp_path)
    no_reward = [make_record(i, observation=[0.1] * 11) for i in range(5)]
    assert "no record carries a reward" in _import_error(_write(tmp_path / "old.mcap", no_reward), tmp_path)
    assert "observations have 11 dims, task halfcheetah has 17" in _import_error(
        _write(tmp_path / "hop.mcap", _episode_records(11)), tmp_path, task="halfcheetah")
    telemetry_only = [make_record(i) for i in range(5)]  # a 1.1 server recorded no observations
    assert "carry no observations" in _import_error(_write(tmp_path / "t.mcap", telemetry_only), tmp_path)
    ok = run_cli("data", "import", str(_write(tmp_path / "good.mcap", _episode_records(11))), "--task", "hopper",
                 "--root", str(tmp_path / "ds2"))
    (episode,) = iter_episodes(tmp_path / "ds2" / "spaars" / "good-deployed-v0")
    assert len(episode) == 4 and episode.terminations[-1] and "good-deployed" in ok.stdout
    np.testing.assert_array_equal(episode.actions, np.full((4, 3), [0.1, 0.2, 0.3], np.float32))


def test_chains_break_at_gaps_sessions_and_bad_observations(tmp_path: Path) -> None:
    """Only consecutive observations of one session become transitions; the step before a break is dropped."""
    records = _episode_records(11, steps=6)
    records[3].episode_step, records[4].episode_step = 9, 10  # lost requests: step 2 -> 9 is no transition
    records[5].observation = [float("nan")] * 11  # a broken sensor reading
    other = [make_record(100 + i, client="robot2#4", observation=[0.5] * 11, policy_action=[0.0] * 3,
                         **({} if i == 0 else {"episode_step": i, "reward": 2.0, "truncated": i == 2,
                                               "terminated": False}))
             for i in range(3)]
    path = _write(tmp_path / "gaps.mcap", records + other)
    run_cli("data", "import", str(path), "--task", "hopper", "--root", str(tmp_path / "ds"))
    episodes = list(iter_episodes(tmp_path / "ds" / "spaars" / "gaps-deployed-v0"))
    # robot1: steps [0,1,2] -> 2 transitions, cut (truncated); [9,10] -> 1, cut; a NaN observation; [6] alone
    # robot2: [0,1,2] -> 2 transitions, the controller's truncation
    assert sorted(len(e) for e in episodes) == [1, 2, 2]
    assert all(e.truncations[-1] and not e.terminations.any() for e in episodes)
    robot2 = next(e for e in episodes if e.rewards[0] == 2.0)
    np.testing.assert_array_equal(robot2.actions, np.full((2, 3), [0.1, -0.4, 0.98], np.float32))  # no applied: sent


MALFORMED_OUTCOMES = [
    {"step": 0, "reward": 1.0}, {"step": 1, "reward": float("nan")}, {"step": 1, "reward": "1"},
    {"step": 1, "reward": 1.0, "terminated": 1}, {"step": True, "reward": 1.0}, {"reward": 1.0}, [1, 2],
    {"step": 1, "reward": 1.0, "applied": {"dtype": "<f4", "shape": [3], "data": b"\x00" * 8}},
    {"step": 1, "reward": 1.0, "applied": p.encode_array(np.ones(2, np.float32))},  # not action_dim
    {"step": 1, "reward": 1.0, "applied": p.encode_array(np.full(3, np.inf, np.float32))},
]


def test_malformed_outcome_is_refused_and_an_old_client_still_served(tmp_path: Path) -> None:
    import msgpack
    import zmq

    bundle = tmp_path / "bundle"
    export_bundle(random_stack(11, 3, seed=0), hopper_info(), bundle)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    server = _serve(bundle, endpoint, tmp_path / "r.mcap")
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    try:
        with Client(endpoint, task_schema(load_task("hopper")), timeout_s=2.0) as client:
            wait_for_server(client, server)
            assert client.act(np.zeros(11, np.float32)).action.shape == (3,)  # no outcome: a 1.1 client
            good = client.act(np.zeros(11, np.float32), outcome=p.Outcome(1, 0.5, applied=np.ones(3, np.float32)))
            assert good.action.shape == (3,)
        dealer.connect(endpoint)
        dealer.send(p.encode(p.Hello(schema=task_schema(load_task("hopper")))))
        assert dealer.poll(5000) and isinstance(p.decode(dealer.recv()), p.Welcome)
        for seq, outcome in enumerate(MALFORMED_OUTCOMES):
            body = msgpack.unpackb(p.encode(p.Act(seq, np.zeros(11, np.float32))), raw=False)
            body["outcome"] = outcome
            dealer.send(msgpack.packb(body, use_bin_type=True))
            assert dealer.poll(5000), outcome
            reply = p.decode(dealer.recv())
            assert isinstance(reply, p.ErrorReply) and reply.code == p.MALFORMED, (outcome, reply)
    finally:
        dealer.close(linger=0)
        context.term()
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
