"""Round-trip latency of the action server vs a bare ZeroMQ echo and vs onnxruntime alone, in one run.

    MUJOCO_GL=egl .venv/bin/python benchmarks/serve_latency.py            # full: 20k requests, 60 s sustained
    MUJOCO_GL=egl .venv/bin/python benchmarks/serve_latency.py --requests 2000 --sustain-s 2   # quick look

Measures, for tcp loopback and ipc, p50/p99/p99.9 over --requests round trips after a warm-up:
(a) a bare echo server (ROUTER, same request/reply sizes, same msgpack codec) in its own process,
(b) onnxruntime inference alone (the bundle's fused graph, 1 thread), plus the same four outputs from
    four separate graphs (the fused-vs-split decision), (c) the full ActionServer in its own process, as
    `serve` runs it (gate + support monitor + the hopper safety layer), the same with `--busy-poll` pinned to
    the last core (plus a spinning echo as its like-for-like baseline), and the server without the safety
    layer, side by side, one server process at a time; the client runs on the other cores throughout
    (a spinning server and its controller must not share a core: the scheduler's time slice is ms); plus the server's request handler alone (no sockets), with and without
    safety, which is the per-request hot path the safety layer adds to.
Then a sustained fixed-rate run (1 kHz and 100 Hz) against the echo and the full server, each sleeping and
busy-polling, and each sleeping under `--realtime PRIORITY` (server process and controller loop SCHED_FIFO with
memory locked, as `serve --realtime` / `sim --realtime` run them), and the pacing loop alone with no request
(how late this machine wakes a sleeping process), with and without SCHED_FIFO. Ticks follow absolute
deadlines; a tick the loop reaches after its period has ended is skipped (not squeezed in late), and
every tick is counted once: on time, late (reply after the end of its period), lost (no reply), or
skipped. Waiting is a sleep with a 50 us final spin, so the loop does not burn the core it measures on. The bundle is a random-weight Hopper-sized stack with the real
architecture, exported like a trained one. Results go to benchmarks/results/serve_latency.json.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import socket
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import zmq

from spaars_robot.export.bundle import load_bundle
from spaars_robot.export.onnx_export import OPSET, export_bundle, make_session
from spaars_robot.export.stack import RunExportInfo, SupportCalibration, random_stack
from spaars_robot.runtime import protocol as p
from spaars_robot.runtime.client import Client

OBS_DIM, ACT_DIM, HIDDEN = 11, 3, (256, 256)


def percentiles(samples_us: list[float]) -> dict[str, float]:
    a = np.asarray(samples_us)
    return {"n": len(a), "p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)),
            "p99.9_us": float(np.percentile(a, 99.9)), "max_us": float(a.max())}


def make_bundle(root: Path):
    info = RunExportInfo(task="hopper", obs_dim=OBS_DIM, action_dim=ACT_DIM, control_rate_hz=125.0,
                         gate_threshold=0.0, gate_hysteresis=0.05, support_threshold=1.0,
                         support_calibration=SupportCalibration(quantile=0.99, dataset="benchmark", samples=0,
                                                                dataset_sha256="0" * 64),
                         run_dir="benchmark", algo="spaars", seed=0, train_command="random_stack (benchmark)",
                         config={"hidden": list(HIDDEN)})
    stack = random_stack(OBS_DIM, ACT_DIM, hidden=HIDDEN, ensemble_size=2)
    export_bundle(stack, info, root / "bundle")
    return stack, load_bundle(root / "bundle")


def echo_server(endpoint: str, busy: bool, rt: int | None, ready) -> None:
    """Bare ROUTER that decodes the request and answers a same-size action reply with the same codec.

    busy: spin on a non-blocking receive like `serve --busy-poll`, pinned like it (the like-for-like baseline).
    rt: SCHED_FIFO priority, entered as `serve --realtime` does (before the context, whose I/O thread is FIFO too).
    """
    sock = realtime_or_default_context(rt).socket(zmq.ROUTER)
    sock.bind(endpoint)
    if busy:
        pin_busy_core()  # after the socket: ZeroMQ's I/O thread must stay free to run elsewhere
    ready.set()
    action = np.zeros(ACT_DIM, np.float32)
    while True:
        if busy:
            try:
                ident, frame = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                continue
        else:
            ident, frame = sock.recv_multipart()
        msg = p.decode(frame)
        if isinstance(msg, p.Hello):
            reply = p.Welcome(schema=msg.schema, bundle_sha256="0" * 64, session=1, gate_threshold=0,
                              gate_hysteresis=0, support_threshold=0, support_hysteresis=0)
        else:
            reply = p.ActionReply(seq=msg.seq, action=action, source="raw", gate_advantage=0.0, support_score=0.0,
                                  fallbacks=0, infer_us=0.0, server_us=0.0)
        sock.send_multipart([ident, p.encode(reply)])


def pin_busy_core() -> None:
    """The spinning thread gets the last core to itself (as `serve --busy-poll --cpu N` does on a robot)."""
    from spaars_robot.runtime.server import pin_to_cpu

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 1:
        pin_to_cpu([cores[-1]])


def realtime_or_default_context(rt: int | None) -> zmq.Context:
    if rt is None:
        return zmq.Context.instance()
    from spaars_robot.runtime.realtime import enter_realtime, realtime_context

    enter_realtime(rt)
    return realtime_context(rt)


def full_server(bundle_path: str, endpoint: str, safety: bool, busy: bool, rt: int | None, ready) -> None:
    """The server as `serve` runs it (its bundle's recorded safety spec), or without the safety layer;
    busy: as `serve --busy-poll --cpu <last core>` runs it; rt: as `serve --realtime rt` runs it."""
    from spaars_robot.runtime.server import ActionServer

    bundle = load_bundle(bundle_path)
    layer = safety_layer(bundle) if safety else None
    context = realtime_or_default_context(rt)
    with ActionServer(bundle, [endpoint], safety=layer, context=context) as server:
        if busy:
            pin_busy_core()  # after the socket, as `serve` does: ZeroMQ's I/O thread stays unpinned
        ready.set()
        server.serve(busy_poll=busy)


def safety_layer(bundle):
    from spaars_robot.export.safety_binding import bind_spec
    from spaars_robot.safety.limits import SafetyLayer

    m = bundle.manifest
    return SafetyLayer(bind_spec(m, None).spec, m.action.dim, m.observation.dim)


def handler_alone(bundle, n: int, safety: bool) -> dict[str, float]:
    """ActionServer.handle on encoded frames, no sockets: decode + infer + decide + safety + encode."""
    from spaars_robot.runtime.server import ActionServer

    obs = np.random.default_rng(0).normal(0, 0.3, (64, OBS_DIM)).astype(np.float32)
    server = ActionServer(bundle, ["tcp://127.0.0.1:*"], safety=safety_layer(bundle) if safety else None)
    try:
        schema = server.schema
        server.handle(b"bench", p.encode(p.Hello(schema=schema)), time.perf_counter())
        frames = [p.encode(p.Act(i, o)) for i, o in enumerate(obs)]
        return percentiles(_time(lambda f: server.handle(b"bench", f, time.perf_counter()), frames, n))
    finally:
        server.close()


def round_trips(endpoint: str, schema: p.Schema, n: int, warmup: int = 1000,
                context: zmq.Context | None = None) -> dict[str, float | dict]:
    """Round-trip percentiles, plus the server's own timing fields (ORT call, whole handler) when it sends them."""
    obs = np.random.default_rng(0).normal(0, 0.3, (64, OBS_DIM)).astype(np.float32)
    with Client(endpoint, schema, timeout_s=1.0, context=context) as client:
        client.connect(timeout_s=10)
        samples, infer, server = [], [], []
        for i in range(warmup + n):
            t = time.perf_counter()
            reply = client.act(obs[i % 64])
            if i >= warmup:
                samples.append((time.perf_counter() - t) * 1e6)
                infer.append(reply.infer_us)
                server.append(reply.server_us)
    result: dict = percentiles(samples)
    if any(server):  # the echo reports zeros
        result["in_server"] = {"ort_p50_us": float(np.percentile(infer, 50)),
                               "handler_p50_us": float(np.percentile(server, 50)),
                               "handler_p99_us": float(np.percentile(server, 99))}
    return result


class ControllerRealtime:
    """The controller loop under SCHED_FIFO for one measurement (as `sim --realtime` runs), then back to normal.

    Memory stays locked once locked (munlockall would only matter for the benchmark process's later phases).
    """

    def __init__(self, rt: int | None) -> None:
        self.rt, self.context = rt, None

    def __enter__(self) -> zmq.Context | None:
        if self.rt is not None:
            from spaars_robot.runtime.realtime import enter_realtime, realtime_context

            enter_realtime(self.rt)
            self.context = realtime_context(self.rt)
        return self.context

    def __exit__(self, *exc: object) -> None:
        if self.rt is not None:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            self.context.term()


def sustained(endpoint: str, schema: p.Schema, rate_hz: float, seconds: float,
              context: zmq.Context | None = None) -> dict[str, float]:
    """Fixed-rate loop on absolute deadlines; every planned tick is on time, late, lost or skipped."""
    from spaars_robot.runtime.sim_client import sleep_until

    period = 1.0 / rate_hz
    obs = np.zeros(OBS_DIM, np.float32)
    ticks = int(seconds * rate_hz)
    late = lost = skipped = 0
    samples: list[float] = []
    with Client(endpoint, schema, timeout_s=period, context=context) as client:
        client.connect(timeout_s=10)
        t0 = time.perf_counter() + 0.01
        k = 0
        while k < ticks:
            due = t0 + k * period
            now = time.perf_counter()
            if now >= due + period:  # this tick's period is already over: skip it (and any others passed)
                passed = min(int((now - due) // period), ticks - k)
                skipped += passed
                k += passed
                continue
            sleep_until(due)
            t = time.perf_counter()
            try:
                client.act(obs, timeout_s=max(due + period - t, 0.0))
                samples.append((time.perf_counter() - t) * 1e6)
                late += time.perf_counter() > due + period
            except p.SpaarsError:
                lost += 1
            k += 1
        # how the client lived through the misses: a socket rebuilt and re-handshaken, or late replies dropped
        client_stats = {"sockets_built": client.sockets_built, "handshakes": client.handshakes,
                        "timeouts": client.timeouts, "stale_replies": client.stale_replies}
    return {"rate_hz": rate_hz, "seconds": seconds, "ticks": ticks, "deadline_misses": late + lost + skipped,
            "late": late, "lost": lost, "skipped": skipped, "client": client_stats,
            **{f"rtt_{k}": v for k, v in percentiles(samples or [0.0]).items() if k != "n"}}


def timer_alone(rate_hz: float, seconds: float) -> dict[str, float]:
    """The pacing loop with no request at all: how late this machine wakes a sleeping process (its floor)."""
    from spaars_robot.runtime.sim_client import sleep_until

    period = 1.0 / rate_hz
    ticks = int(seconds * rate_hz)
    t0 = time.perf_counter() + 0.01
    lateness = np.empty(ticks)
    for k in range(ticks):
        due = t0 + k * period
        sleep_until(due)
        lateness[k] = (time.perf_counter() - due) * 1e6
    return {"rate_hz": rate_hz, "seconds": seconds, "ticks": ticks,
            "wakeups_later_than_period": int((lateness > period * 1e6).sum()),
            "wakeups_later_than_half_period": int((lateness > period * 5e5).sum()),
            **{f"lateness_{k}": v for k, v in percentiles(list(lateness)).items() if k != "n"}}


def ort_alone(bundle, n: int, root: Path, stack) -> dict[str, dict]:
    """The fused graph vs four separate graphs computing the same outputs (the export layout decision),
    and the fused graph called as the server calls it (`PolicyRunner`: IOBinding to preallocated outputs)."""
    obs = np.random.default_rng(0).normal(0, 0.3, (64, 1, OBS_DIM)).astype(np.float32)
    out: dict[str, dict] = {}
    fused = make_session(bundle.graph_path)
    out["fused_graph"] = percentiles(_time(lambda o: fused.run(None, {"obs": o}), obs, n))
    from spaars_robot.runtime.inference import PolicyRunner  # what the server calls: outputs bound once

    runner = PolicyRunner(bundle)
    out["fused_graph_iobinding"] = percentiles(_time(lambda o: runner(o[0]), obs, n))
    sessions = split_sessions(stack, root)
    def split(o):
        raw = sessions["raw"].run(None, {"obs": o})[0]
        latent = sessions["latent"].run(None, {"obs": o})[0]
        sessions["gate"].run(None, {"obs": o, "raw": raw, "latent": latent})
        sessions["support"].run(None, {"obs": o, "raw": raw})
    out["split_graphs"] = percentiles(_time(split, obs, n))
    return out


def split_sessions(stack, root: Path) -> dict:
    """Four graphs: raw policy, latent policy through the decoder, gate(obs, raw, latent), support(obs, raw)."""
    from spaars_robot.algos.gate import gate_lcb

    class Part(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stack = stack  # registered, so the weights are graph initializers, not traced constants

    class Raw(Part):
        def forward(self, obs):
            return self.stack.raw_policy.mean_action(self.stack.normalizer(obs))

    class Latent(Part):
        def forward(self, obs):
            s = self.stack.normalizer(obs)
            return self.stack.cvae.decode(s, self.stack.latent_policy.mean_action(s))

    class Gate(Part):
        def forward(self, obs, raw, latent):
            return gate_lcb(self.stack.critic, self.stack.normalizer(obs), raw, latent, self.stack.gate_kappa)

    class Support(Part):
        def forward(self, obs, raw):
            return self.stack.cvae.support_score(self.stack.normalizer(obs), raw)

    x, a = torch.zeros(1, OBS_DIM), torch.zeros(1, ACT_DIM)
    graphs = {"raw": (Raw(), (x,), ["obs"]), "latent": (Latent(), (x,), ["obs"]),
              "gate": (Gate(), (x, a, a), ["obs", "raw", "latent"]), "support": (Support(), (x, a), ["obs", "raw"])}
    sessions = {}
    for name, (module, args, inputs) in graphs.items():
        path = root / f"split_{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), args, str(path), input_names=inputs, opset_version=OPSET, dynamo=False)
        sessions[name] = make_session(path)
    return sessions


def _time(fn, obs: np.ndarray, n: int, warmup: int = 1000) -> list[float]:
    samples = []
    for i in range(warmup + n):
        o = obs[i % len(obs)]
        t = time.perf_counter()
        fn(o)
        if i >= warmup:
            samples.append((time.perf_counter() - t) * 1e6)
    return samples


def start(target, *args) -> mp.Process:
    ready = mp.get_context("spawn").Event()
    proc = mp.get_context("spawn").Process(target=target, args=(*args, ready), daemon=True)
    proc.start()
    if not ready.wait(60):
        raise RuntimeError(f"{target.__name__} did not start")
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000, help="Round trips per latency measurement.")
    parser.add_argument("--sustain-s", type=float, default=60.0, help="Seconds of the sustained 1 kHz run.")
    parser.add_argument("--sustain-100hz-s", type=float, default=60.0, help="Seconds of the sustained 100 Hz run.")
    parser.add_argument("--realtime", type=int, default=80, metavar="PRIORITY",
                        help="SCHED_FIFO priority of the real-time configurations (0: leave them out).")
    parser.add_argument("--configs", default="", help="Comma-separated server configurations to run (default: all; "
                        "e.g. full_server_realtime,bare_echo_realtime); the ratios need the full set.")
    parser.add_argument("--transports", default="tcp,ipc", help="Comma-separated: tcp, ipc.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve_latency.json")
    args = parser.parse_args()
    rt = args.realtime or None
    if rt is not None:  # probe in a child: the benchmark itself stays a normal process between measurements
        import subprocess
        import sys

        probe = subprocess.run([sys.executable, "-c", "import sys; from spaars_robot.runtime.realtime import "
                                f"enter_realtime; enter_realtime({rt})"], capture_output=True, text=True)
        if probe.returncode != 0:
            raise SystemExit(f"--realtime {rt}: {probe.stderr.strip().splitlines()[-1]} (or pass --realtime 0)")

    torch.set_num_threads(1)
    results: dict = {"command": "benchmarks/serve_latency.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_before": os.getloadavg(), "python": platform.python_version(),
                    "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version()},
        "stack": {"obs_dim": OBS_DIM, "action_dim": ACT_DIM, "hidden": list(HIDDEN), "critic_ensemble": 2}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stack, bundle = make_bundle(root)
        schema = p.Schema("hopper", tuple(bundle.manifest.observation.names), tuple(bundle.manifest.action.names),
                          125.0)
        endpoints = {"tcp": lambda: f"tcp://127.0.0.1:{free_port()}", "ipc": lambda: f"ipc://{root}/{time.time_ns()}"}
        if not args.configs:  # the whole run: the in-process measurements and the pacing loop's floor too
            results["onnxruntime_alone"] = ort_alone(bundle, args.requests, root, stack)
            print("onnxruntime alone:", json.dumps(results["onnxruntime_alone"], indent=1))
            results["handler_alone"] = {"with_safety": handler_alone(bundle, args.requests, True),
                                        "without_safety": handler_alone(bundle, args.requests, False)}
            print("request handler alone:", json.dumps(results["handler_alone"], indent=1))
            results["timer_alone"] = timer_alone(1000.0, args.sustain_s)
            print("timer alone:", results["timer_alone"], flush=True)
        if rt is not None and not args.configs:
            with ControllerRealtime(rt):
                results["timer_alone_realtime"] = {**timer_alone(1000.0, args.sustain_s), "priority": rt}
            print("timer alone, SCHED_FIFO:", results["timer_alone_realtime"], flush=True)
        all_cores = sorted(os.sched_getaffinity(0))
        # One server process at a time: a spinning one would otherwise steal a core from the others' runs.
        configs = {"bare_echo": (echo_server, False, None), "bare_echo_busy": (echo_server, True, None),
                   "full_server": (full_server, True, False, None), "full_server_busy": (full_server, True, True, None),
                   "server_without_safety": (full_server, False, False, None)}
        if rt is not None:
            configs.update({"bare_echo_realtime": (echo_server, False, rt),
                            "full_server_realtime": (full_server, True, False, rt)})
        if args.configs:
            unknown = set(args.configs.split(",")) - set(configs)
            if unknown:
                raise SystemExit(f"--configs: unknown {sorted(unknown)}; known: {sorted(configs)}")
            configs = {name: configs[name] for name in args.configs.split(",")}
        endpoints = {t: endpoints[t] for t in args.transports.split(",")}
        for transport, make_endpoint in endpoints.items():
            res: dict = {}
            for name, (target, *flags) in configs.items():
                endpoint = make_endpoint()
                args_ = (endpoint, *flags) if target is echo_server else (str(bundle.path), endpoint, *flags)
                proc = start(target, *args_)
                if len(all_cores) > 1:  # the client never shares the last core with a spinning server
                    os.sched_setaffinity(0, all_cores[:-1])
                try:
                    server_rt = flags[-1]
                    with ControllerRealtime(server_rt) as context:
                        res[name] = round_trips(endpoint, schema, args.requests, context=context)
                    print(f"{transport}: {name} {res[name]}", flush=True)
                    if transport == "tcp" and (target is echo_server or flags[0]):
                        with ControllerRealtime(server_rt) as context:  # both ends real-time, or neither
                            runs = [sustained(endpoint, schema, 1000.0, args.sustain_s, context),
                                    sustained(endpoint, schema, 100.0, args.sustain_100hz_s, context)]
                        for run in runs:
                            run["server"] = name
                            run["realtime_priority"] = server_rt
                        results.setdefault("sustained", []).extend(runs)
                        print("sustained:", runs, flush=True)
                finally:
                    os.sched_setaffinity(0, all_cores)
                    proc.kill()
                    proc.join()
            results[transport] = res
            if not {"bare_echo", "bare_echo_busy", "full_server", "full_server_busy"} <= set(res):
                continue  # a partial run (--configs) has no ratios
            echo, busy_echo = res["bare_echo"], res["bare_echo_busy"]
            res["ratios"] = {
                "full_vs_echo": {q: res["full_server"][f"{q}_us"] / echo[f"{q}_us"] for q in ("p50", "p99")},
                "busy_full_vs_echo": {q: res["full_server_busy"][f"{q}_us"] / echo[f"{q}_us"] for q in ("p50", "p99")},
                "busy_full_vs_busy_echo": {q: res["full_server_busy"][f"{q}_us"] / busy_echo[f"{q}_us"]
                                           for q in ("p50", "p99")}}
            if rt is not None:
                res["ratios"]["realtime_full_vs_realtime_echo"] = {
                    q: res["full_server_realtime"][f"{q}_us"] / res["bare_echo_realtime"][f"{q}_us"]
                    for q in ("p50", "p99")}
            print(f"{transport}: ratios {res['ratios']}", flush=True)
    results["machine"]["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
