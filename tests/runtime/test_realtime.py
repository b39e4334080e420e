"""`serve --realtime` / `sim --realtime`: SCHED_FIFO + locked memory where the OS grants it, one error line where not.

Real processes, real scheduler: the granted case reads the server's threads' policies and locked memory from
/proc; the refused case runs the server as an unprivileged user (when the test runs as root, as CI does) or as
is (when it does not), so the refusal path is exercised on every machine.
"""
from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spaars_robot.config.tasks import load_task
from spaars_robot.export.bundle import load_bundle, resolve_bundle
from spaars_robot.runtime.client import Client
from spaars_robot.runtime.realtime import thread_policies
from spaars_robot.runtime.service import start_server_process, stop_server_process, wait_for_server
from spaars_robot.runtime.sim_client import task_schema
from tests.conftest import run_cli
from tests.runtime.runtime_helpers import free_port

pytestmark = pytest.mark.timeout(120)
PRIORITY = 10


def fifo_allowed() -> bool:
    """Whether this process may use SCHED_FIFO (probed in a child, so this process stays as it is)."""
    probe = subprocess.run(["python3", "-c", f"import os; os.sched_setscheduler(0, os.SCHED_FIFO, "
                                             f"os.sched_param({PRIORITY}))"], capture_output=True)
    return probe.returncode == 0


def no_rt_priority() -> None:
    """In the child before exec: an rtprio limit of 0 (what an unprivileged user has by default)."""
    resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))


def without_cap_sys_nice(argv: list[str]) -> list[str]:
    """Root's CAP_SYS_NICE ignores the rtprio limit: drop it from the bounding set (util-linux setpriv)."""
    return ["setpriv", "--bounding-set", "-sys_nice", *argv] if os.geteuid() == 0 else argv


def locked_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmLck:\s+(\d+) kB", status).group(1))


@pytest.mark.parametrize("args, message", [(("--realtime", "0"), "priorities are 1..99"),
                                           (("--realtime", "100"), "priorities are 1..99"),
                                           (("--realtime", "10", "--busy-poll"), "--busy-poll")])
def test_bad_realtime_arguments_are_one_line_errors(args, message):
    proc = run_cli("serve", "--bind", f"tcp://127.0.0.1:{free_port()}", *args, check=False, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], proc.stderr


def test_served_under_sched_fifo_with_memory_locked_where_the_os_allows_it():
    bundle = resolve_bundle("policies/hopper-default")
    loaded = load_bundle(bundle)
    hopper = load_task(loaded.manifest.task)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    server = start_server_process(bundle, endpoint, ("--realtime", str(PRIORITY)))
    try:
        if not fifo_allowed():  # e.g. a container without CAP_SYS_NICE: must be a refusal, never a silent fallback
            server.wait(60)
            assert server.returncode == 2 and "refused SCHED_FIFO" in server.stderr.read()
            return
        with Client(endpoint, task_schema(hopper), timeout_s=1.0) as client:
            wait_for_server(client, server)
            reply = client.act(np.zeros(hopper.obs_dim, np.float32))
            assert reply.action.shape == (hopper.action_dim,)
            policies = thread_policies(server.pid)
            assert policies[server.pid] == os.SCHED_FIFO  # the serving (main) thread
            assert os.sched_getparam(server.pid).sched_priority == PRIORITY
            # ZeroMQ's I/O thread was started by the realtime context: at least one more FIFO thread
            assert sum(policy == os.SCHED_FIFO for policy in policies.values()) >= 2
            assert locked_kib(server.pid) > 10_000  # mlockall: the interpreter, onnxruntime, the bundle
    finally:
        code = stop_server_process(server)
    out = server.stdout.read()
    assert code == 0 and f"SCHED_FIFO priority {PRIORITY}, memory locked" in out, out


def test_an_os_refusal_is_one_error_line_and_no_server():
    argv = [sys.executable, "-m", "spaars_robot.cli", "serve", "--bind", f"tcp://127.0.0.1:{free_port()}",
            "--realtime", str(PRIORITY)]
    proc = subprocess.run(without_cap_sys_nice(argv), capture_output=True, text=True, timeout=60,
                          preexec_fn=no_rt_priority)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, err)
    assert len(err) == 1 and err[0].startswith("error:") and "refused SCHED_FIFO" in err[0], err
    assert "serving" not in proc.stdout


def test_sim_runs_its_control_loop_realtime_or_says_why_not(live_server):
    proc = run_cli("sim", "--connect", live_server.bound[0], "--episodes", "1", "--max-steps", "30",
                   "--realtime", str(PRIORITY), check=False, timeout=120)
    if fifo_allowed():
        assert proc.returncode == 0, proc.stderr
        assert f"control loop: SCHED_FIFO priority {PRIORITY}, memory locked" in proc.stdout
        assert "1 episode(s)" in proc.stdout
    else:
        assert proc.returncode == 2 and "refused SCHED_FIFO" in proc.stderr
