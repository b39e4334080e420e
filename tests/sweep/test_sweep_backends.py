"""Real sweeps of `smoke` trials: the local backend survives kill -9 (no orphan, resumes, reruns nothing finished),
and the Ray backend, on a local Ray instance the sweep starts, gives the local backend's numbers exactly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray  # the Ray backend is part of the tested product: without ray this module fails, it never skips
import yaml

from tests.conftest import REPO, run_cli

SEEDS = [0, 1, 2]


def _write_sweep(root: Path, dataset: Path, seeds: list[int]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump({"protocol": "smoke", "safety_spec": "none", "tasks": ["hopper"],
                                    "datasets": {"hopper": str(dataset)}, "algos": ["iql"], "seeds": seeds,
                                    "runs_root": str(root / "runs")}))
    return path


def _live_pids(marker: str) -> list[int]:
    """Processes (not zombies) whose command line contains `marker`: a sweep's trials name their run dirs."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def _descendants(root_pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError, IndexError):
            continue
    found, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in found]
        found.update(children)
        frontier.extend(children)
    return found


def _non_loopback_listeners(root_pid: int) -> list[str]:
    """TCP sockets listening on anything but loopback, held by `root_pid` or a descendant (/proc/net/tcp*)."""
    inodes = set()
    for pid in _descendants(root_pid):
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    bad = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            address = local.split(":")[0]
            # IPv4 hex is little-endian (127.x.x.x ends in 7F); IPv6: ::1, or ::ffff:127.x.x.x
            loopback = address.endswith("7F") if len(address) == 8 else (
                address == "00000000000000000000000001000000"
                or (address.startswith("0000000000000000FFFF0000") and address.endswith("7F")))
            if state == "0A" and inode in inodes and not loopback:
                bad.append(f"{table}: {local}")
    return bad


def _summaries(root: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((root / "runs" / "summaries").glob("*.json"))}


def _mid_run(runs: Path) -> list[Path]:
    """Run directories with a checkpoint but no summary: trials that have started and not finished."""
    return [c.parent for c in runs.glob("*/seed*/checkpoint.pt") if not (c.parent / "summary.json").exists()]


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:  # exited between the /proc scan and the signal
        pass


@pytest.fixture(scope="module")
def local_sweep(tiny_hopper_dataset, tmp_path_factory):
    """Start a 3-trial sweep on 2 workers, kill -9 it while a trial is mid-run, then run the same command again."""
    root = tmp_path_factory.mktemp("local")
    sweep = _write_sweep(root, tiny_hopper_dataset, SEEDS)
    runs, summaries = root / "runs", root / "runs" / "summaries"
    env = {**os.environ, "SPAARS_CACHE": str(root / "cache"), "MUJOCO_GL": "egl"}
    with open(root / "first.log", "wb") as log:
        first = subprocess.Popen([sys.executable, "-m", "spaars_robot.cli", "sweep", str(sweep), "--workers", "2"],
                                 cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    finished: list[Path] = []
    mid_run: list[Path] = []
    trial_pids: list[int] = []
    while time.monotonic() < deadline and first.poll() is None:
        finished = list(summaries.glob("*.json"))
        if finished and _mid_run(runs):
            # Freeze the sweep (no new trial starts) and its trials (none can finish), then look again: a smoke
            # trial lasts ~2 s, and one seen mid-run a moment ago may have written its summary since (CI saw it).
            first.send_signal(signal.SIGSTOP)
            trial_pids = _live_pids(str(runs))
            for pid in trial_pids:
                _signal(pid, signal.SIGSTOP)
            mid_run = _mid_run(runs)
            if mid_run:
                break
            for pid in [*trial_pids, first.pid]:
                _signal(pid, signal.SIGCONT)
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)  # also when the wait above failed: never leave a sweep running
    first.wait()
    assert finished and mid_run, (root / "first.log").read_text()
    assert trial_pids, "no trial process found while the sweep ran"
    gone_by = time.monotonic() + 10
    while _live_pids(str(runs)) and time.monotonic() < gone_by:
        time.sleep(0.1)
    orphans = _live_pids(str(runs))
    before = {p.stem: (p.stat().st_mtime_ns, p.read_bytes()) for p in summaries.glob("*.json")}
    logs_before = {p: p.stat().st_size for p in runs.glob("*/seed*/train.log")}
    second = run_cli("sweep", str(sweep), "--workers", "2", env={"SPAARS_CACHE": str(root / "cache")})
    return {"root": root, "orphans": orphans, "killed_pids": trial_pids, "before": before, "mid_run": mid_run,
            "logs_before": logs_before, "second": second}


def test_local_sweep_resumes_after_kill_9_without_orphans_or_reruns(local_sweep):
    root, before = local_sweep["root"], local_sweep["before"]
    assert local_sweep["orphans"] == [], f"trial processes outlived the killed sweep: {local_sweep['orphans']}"
    assert f"{len(SEEDS)} trials: {len(before)} done, " in local_sweep["second"].stdout
    after = _summaries(root)
    assert sorted(after) == [f"hopper_iql_smoke_seed{s}" for s in SEEDS]
    assert all(len(s["curve"]) == 4 for s in after.values())
    for name, (mtime, content) in before.items():  # finished before the kill: not rerun, not rewritten
        path = root / "runs" / "summaries" / f"{name}.json"
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == content
    assert local_sweep["mid_run"], "no trial was mid-run at the kill"
    for run_dir in local_sweep["mid_run"]:  # killed mid-run: continued from its checkpoint, not restarted
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert "--resume" in config["command"], config["command"]
    for name in before:  # nor did a finished trial's process run again (train.log is appended by every run)
        log = root / "runs" / "hopper-iql-smoke" / name.rsplit("_", 1)[1] / "train.log"
        assert log.stat().st_size == local_sweep["logs_before"][log], f"{log}: a finished trial ran again"


@pytest.mark.timeout(900)
def test_ray_backend_equals_local_backend_and_resumes_a_preempted_trial(local_sweep, tiny_hopper_dataset, tmp_path):
    """The same trials as Tune trials on a local Ray (loopback only, no dashboard, 2 CPUs) give the same numbers,
    also when one trial's process is killed mid-run (a preempted trial): Tune retries it and it resumes exactly."""
    assert ray.__version__ == "2.60.0"
    sweep = _write_sweep(tmp_path, tiny_hopper_dataset, SEEDS[:2])
    runs = tmp_path / "runs"
    env = {**os.environ, "SPAARS_CACHE": str(tmp_path / "cache"), "MUJOCO_GL": "egl"}  # pretraining redone on Ray
    with open(tmp_path / "ray.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "spaars_robot.cli", "sweep", str(sweep), "--backend", "ray",
                                 "--workers", "2"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    # Ray's own start-up (GCS, raylet, workers) took ~3 minutes on a loaded 2-core VM before a trial ran
    deadline, victim = time.monotonic() + 420, None
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        for checkpoint in runs.glob("*/seed*/checkpoint.pt"):
            pids = _live_pids(f"--run-dir {checkpoint.parent} ")
            if pids and not (checkpoint.parent / "summary.json").exists():
                victim = checkpoint.parent
                exposed = _non_loopback_listeners(proc.pid)  # Ray is fully up: every server it runs is listening
                os.kill(pids[0], signal.SIGKILL)
                break
        time.sleep(0.2)
    try:
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, (tmp_path / "ray.log").read_text()
    output = (tmp_path / "ray.log").read_text()
    assert victim is not None, output
    assert exposed == [], f"the local Ray listens beyond loopback: {exposed}"
    assert "2 trials finished now" in output, output
    assert "--resume" in yaml.safe_load((victim / "config.yaml").read_text())["command"]  # retried, resumed
    assert (runs / "_ray").is_dir()  # Tune's experiment directory beside the run directories
    on_ray, local = _summaries(tmp_path), _summaries(local_sweep["root"])
    assert sorted(on_ray) == [f"hopper_iql_smoke_seed{s}" for s in SEEDS[:2]]
    for name, summary in on_ray.items():
        for key in ("curve", "final_normalized", "offline_normalized", "switch", "early_falls"):
            assert summary[key] == local[name][key], f"{name}: {key} differs between ray and local"
