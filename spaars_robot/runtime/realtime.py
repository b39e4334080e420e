"""Real-time scheduling for the action server and the controller loop (`--realtime PRIORITY`).

A robot computer runs its control loop and policy server under SCHED_FIFO with locked memory, as
ros2_control and libfranka setups do: under the default scheduler a training run or a browser on the same
machine delays the wake-up of a sleeping server or controller by hundreds of microseconds, often enough
to miss a 1 kHz deadline (BENCHMARKS.md "Serving latency"). SCHED_FIFO threads preempt every normal
thread; locking memory (mlockall) keeps a page fault from stalling a request.

Why refuse rather than fall back: a controller that believes it runs real-time but does not is the
failure the flag exists to prevent, so a refusal by the OS is a one-line error naming the cause.

The risk: a SCHED_FIFO thread that never sleeps starves everything of lower priority on its core. The
kernel's RT budget bounds it: RT threads may use `kernel.sched_rt_runtime_us` of every
`kernel.sched_rt_period_us` (default 950000 of 1000000, so normal threads keep 5 %). That throttling is
also why `--realtime` refuses `--busy-poll`: a spinning FIFO thread would use its whole budget and then be
stopped for the rest of every period (50 ms each second by default), a guaranteed stall.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from dataclasses import dataclass
from pathlib import Path

import zmq

from spaars_robot.errors import SpaarsError

MCL_CURRENT, MCL_FUTURE = 1, 2  # <sys/mman.h> on Linux


class RealtimeRefused(SpaarsError):
    """The OS refused SCHED_FIFO or memory locking; the message says why and what would allow it."""


@dataclass(frozen=True)
class RealtimeState:
    """What was granted, for the start-up line and the logs."""

    priority: int
    memory_locked: bool
    rt_runtime_us: int | None  # kernel RT budget per period (-1: unlimited), None where unreadable
    rt_period_us: int | None

    def describe(self) -> str:
        budget = ("unbounded RT budget (sched_rt_runtime_us = -1)" if self.rt_runtime_us == -1 else
                  f"RT budget {self.rt_runtime_us} of {self.rt_period_us} us" if self.rt_runtime_us is not None
                  else "RT budget unknown")
        return f"SCHED_FIFO priority {self.priority}, memory locked, {budget}"


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def check_priority(priority: int) -> int:
    low, high = os.sched_get_priority_min(os.SCHED_FIFO), os.sched_get_priority_max(os.SCHED_FIFO)
    if not low <= priority <= high:
        raise RealtimeRefused(f"--realtime {priority}: SCHED_FIFO priorities are {low}..{high} on this system")
    return priority


def enter_realtime(priority: int) -> RealtimeState:
    """Put the calling thread under SCHED_FIFO at `priority` and lock all current and future memory.

    Threads this thread starts afterwards inherit the policy (pthread's default), so call it before
    starting anything that should stay at normal priority only if that is what you want; the server and
    controller give ZeroMQ's I/O thread the same policy through `realtime_context` instead.
    """
    check_priority(priority)
    runtime, period = _read_int("/proc/sys/kernel/sched_rt_runtime_us"), _read_int("/proc/sys/kernel/sched_rt_period_us")
    if runtime == 0:
        raise RealtimeRefused("--realtime: the kernel's RT budget is 0 (kernel.sched_rt_runtime_us = 0), so a "
                              "SCHED_FIFO thread would never run; raise it (sysctl kernel.sched_rt_runtime_us=950000)")
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError as exc:
        raise RealtimeRefused(
            f"--realtime {priority}: the OS refused SCHED_FIFO ({exc.strerror}); run as root, give the binary "
            f"CAP_SYS_NICE, or allow an rtprio limit for this user (limits.conf: '<user> - rtprio {priority}'); "
            f"in a container or cgroup, it also needs an RT budget (cpu.rt_runtime_us)") from None
    except OSError as exc:
        raise RealtimeRefused(f"--realtime {priority}: sched_setscheduler failed: {exc.strerror}") from None
    try:
        _mlockall()
    except RealtimeRefused:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # all or nothing: never half real-time
        raise
    return RealtimeState(priority, True, runtime, period)


def _mlockall() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
        err = ctypes.get_errno()
        why = {errno.EPERM: "no privilege (CAP_IPC_LOCK)",
               errno.ENOMEM: "the locked-memory limit is too small (ulimit -l; limits.conf 'memlock unlimited')"}
        raise RealtimeRefused(f"--realtime: mlockall failed: {why.get(err, os.strerror(err))}")


def realtime_context(priority: int) -> zmq.Context:
    """A ZeroMQ context whose I/O thread runs SCHED_FIFO at `priority` too: it moves every byte of a request.

    libzmq applies the options when it starts the thread (at the first socket), so they are set here first.
    """
    context = zmq.Context()
    context.set(zmq.THREAD_SCHED_POLICY, os.SCHED_FIFO)
    context.set(zmq.THREAD_PRIORITY, priority)
    return context


def thread_policies(pid: int) -> dict[int, int]:
    """Scheduling policy of every thread of `pid` (Linux), for tests and diagnostics."""
    return {int(tid): os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}
