"""`spaars-robot export | serve | sim | demo`: bundle a trained run, serve it, drive a simulated robot with it."""
from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from spaars_robot.commands.app import app, console
from spaars_robot.errors import SpaarsError
from spaars_robot.export.bundle import DEFAULT_BUNDLE, resolve_bundle


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Training run directory (runs/<name>).")],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory to write, e.g. policies/hopper-mine.")],
    onnx: Annotated[bool, typer.Option("--onnx/--no-onnx", help="Export format; ONNX is the only one.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing bundle at --out.")] = False,
    safety: Annotated[str | None, typer.Option(
        help="Safety spec to validate against and record (robot name or YAML) [default: the one the run trained "
             "under, else safety/<task>.yaml].")] = None,
    gate: Annotated[str, typer.Option(
        help="The raw/latent gate to deploy: critic (the run's critic-ensemble LCB) or rollout (the gate fitted to "
             "branched simulator rollouts by `spaars-robot gate fit RUN`).")] = "critic",
) -> None:
    """Export a trained run as an ONNX policy bundle; refuses to write one that fails torch/ORT parity."""
    if not onnx:
        raise SpaarsError("only --onnx export is supported")
    from spaars_robot.export.from_run import export_spec, load_run_for_export
    from spaars_robot.export.onnx_export import export_bundle

    stack, info = load_run_for_export(run_dir, gate)
    spec, warning = export_spec(info.config, safety)
    if warning is not None:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    manifest = export_bundle(stack, info, out, overwrite=overwrite, safety_spec=spec)
    worst = max(manifest.parity.max_abs_error.values())
    console.print(f"wrote {out} (task {manifest.task}, parity max abs error {worst:.2e} "
                  f"over {manifest.parity.recorded_obs + manifest.parity.random_obs} observations; "
                  f"safety spec {manifest.safety.robot} sha256 {manifest.safety.sha256[:12]})", highlight=False)


@app.command("sign")
def sign_cmd(
    bundle: Annotated[str, typer.Argument(help="Bundle directory to sign.")],
    key: Annotated[Path, typer.Option(help="ed25519 signing key from `spaars-robot keys`.")] = Path("keys/signing.key"),
) -> None:
    """Sign a bundle's manifest (which lists every file's SHA-256); `serve --trusted-key` checks it."""
    from spaars_robot.export.bundle import load_bundle
    from spaars_robot.export.manifest import MANIFEST_NAME
    from spaars_robot.security.signing import sign_manifest

    loaded = load_bundle(resolve_bundle(bundle))  # never sign a bundle whose files do not match
    console.print(f"wrote {sign_manifest(loaded.path / MANIFEST_NAME, key)}")


@app.command("serve")
def serve_cmd(
    bundle: Annotated[str, typer.Option(help="Policy bundle directory.")] = DEFAULT_BUNDLE,
    bind: Annotated[list[str] | None, typer.Option(
        help="Endpoint (loopback tcp or ipc://); repeatable. Default tcp://127.0.0.1:5555.")] = None,
    safety: Annotated[str | None, typer.Option(
        help="Safety spec (robot name or YAML) [default: the one recorded in the bundle manifest].")] = None,
    allow_spec_change: Annotated[bool, typer.Option(
        help="Serve with a safety spec whose SHA-256 differs from the one the bundle was exported with.")] = False,
    telemetry_bind: Annotated[str | None, typer.Option(
        help="Publish per-request telemetry (msgpack) on this loopback PUB endpoint, e.g. tcp://127.0.0.1:5556.")
    ] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus /metrics on 127.0.0.1:PORT.")] = None,
    record: Annotated[Path | None, typer.Option(help="Also record telemetry to this MCAP file.")] = None,
    curve_keys: Annotated[Path | None, typer.Option(
        help="Require CurveZMQ: directory with server.key_secret and allowed_clients/ (`spaars-robot keys`).")] = None,
    trusted_key: Annotated[Path | None, typer.Option(
        help="Refuse the bundle unless manifest.json.sig verifies against this ed25519 public key.")] = None,
    busy_poll: Annotated[bool, typer.Option(
        help="Spin instead of sleeping between requests: lower, steadier latency for a whole core (see --cpu).")
    ] = False,
    cpu: Annotated[list[int] | None, typer.Option(
        help="Pin the server to this CPU (repeatable), e.g. a core isolated for it on the robot computer.")] = None,
    realtime: Annotated[int | None, typer.Option(
        metavar="PRIORITY", help="Serve under SCHED_FIFO at this priority (1-99) with memory locked; an error, never "
                                 "a silent fallback, where the OS refuses (docs/safety.md, 'Real-time scheduling').")
    ] = None,
) -> None:
    """Serve a verified bundle under its safety spec over ZeroMQ until SIGINT/SIGTERM, then print the counts."""
    from spaars_robot.export.bundle import load_bundle
    from spaars_robot.export.safety_binding import bind_spec
    from spaars_robot.runtime.server import (
        DEFAULT_ENDPOINT,
        ActionServer,
        StopFlag,
        check_endpoint,
        pin_to_cpu,
    )
    from spaars_robot.safety.limits import SafetyLayer

    if realtime is not None and busy_poll:
        raise SpaarsError("--realtime with --busy-poll would spin a SCHED_FIFO thread into the kernel's RT "
                          "throttle (a stall every RT period); use --realtime alone, which wakes at once on a request")
    path = resolve_bundle(bundle)
    if trusted_key is not None:
        from spaars_robot.export.manifest import MANIFEST_NAME
        from spaars_robot.security.signing import verify_manifest

        verify_manifest(path / MANIFEST_NAME, trusted_key)
    loaded = load_bundle(path)
    m = loaded.manifest
    bound = bind_spec(m, safety, allow_spec_change)
    layer = SafetyLayer(bound.spec, m.action.dim, m.observation.dim)
    from spaars_robot.runtime.protocol import PROTOCOL_MAJOR, PROTOCOL_MINOR
    from spaars_robot.telemetry.hook import make_telemetry_hook

    build_info = {"bundle": loaded.path.resolve().name, "bundle_sha256": loaded.sha256, "task": m.task,
                  "protocol_version": f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"}
    hook = make_telemetry_hook(check_endpoint(telemetry_bind) if telemetry_bind is not None else None,
                               metrics_port, record, m.support.threshold, build_info)
    stop = StopFlag()  # not a threading.Event: its lock deadlocks a second signal arriving inside the first handler
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        # after the telemetry hook's threads exist, so they stay at normal priority; before the server's context,
        # whose ZeroMQ I/O thread moves the requests and runs SCHED_FIFO too
        rt, context = _enter_realtime(realtime)
        with ActionServer(loaded, bind or [DEFAULT_ENDPOINT], telemetry=hook, safety=layer, context=context,
                          on_watchdog=None if hook is None else hook.watchdog, curve_keys=curve_keys) as server:
            if cpu:  # after the sockets exist: ZeroMQ's I/O thread is already started and stays unpinned
                pin_to_cpu(cpu)
            if bound.override:
                console.print(f"[yellow]warning:[/yellow] --allow-spec-change: {bound.override}", highlight=False)
            extras = [f"safety {bound.spec.robot} ({bound.path.name}, sha256 {bound.sha256[:12]})"]
            if hook is not None and hook.publisher is not None:
                extras.append(f"telemetry {hook.publisher.endpoint}")
            if hook is not None and hook.metrics is not None:
                extras.append(f"metrics http://127.0.0.1:{hook.metrics.port}/metrics")
            if hook is not None and hook.recorder is not None:
                extras.append(f"recording {hook.recorder.path}")
            if curve_keys is not None:
                extras.append(f"CurveZMQ allow-list {curve_keys}")
            if trusted_key is not None:
                extras.append("signature verified")
            if busy_poll or cpu:
                extras.append(f"{'busy-poll' if busy_poll else 'sleeping'} serving thread on CPU(s) "
                              f"{sorted(os.sched_getaffinity(0))}")
            if rt is not None:
                extras.append(rt.describe())
            console.print(f"serving {loaded.path} ({m.task}, bundle {loaded.sha256[:12]}) on "
                          f"{', '.join(server.bound)}; {'; '.join(extras)}", highlight=False, soft_wrap=True)
            sys.stdout.flush()
            server.serve(stop, busy_poll=busy_poll)
            console.print(f"stopped: {json.dumps(server.stats())}", highlight=False, soft_wrap=True)
    finally:
        if hook is not None:
            hook.close()


@app.command("sim")
def sim_cmd(
    connect: Annotated[str, typer.Option(help="Server endpoint.")] = "tcp://127.0.0.1:5555",
    task: Annotated[str, typer.Option(help="Task name or YAML path; must match the served bundle.")] = "hopper",
    episodes: Annotated[int, typer.Option(min=1)] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the first episode; episode i uses seed + i.")] = 0,
    max_steps: Annotated[int | None, typer.Option(help="Cut episodes after this many steps.")] = None,
    fast: Annotated[bool, typer.Option(help="Step as fast as replies come instead of at the control rate.")] = False,
    safety: Annotated[str | None, typer.Option(
        help="Safety spec whose watchdog timings the controller uses [default: safety/<task>.yaml].")] = None,
    curve_secret: Annotated[Path | None, typer.Option(help="This controller's CurveZMQ .key_secret file.")] = None,
    curve_server_key: Annotated[Path | None, typer.Option(help="The server's CurveZMQ public .key file.")] = None,
    realtime: Annotated[int | None, typer.Option(
        metavar="PRIORITY", help="Run the control loop under SCHED_FIFO at this priority (1-99) with memory locked; "
                                 "an error where the OS refuses.")] = None,
) -> None:
    """Play the simulated robot against a running server at the task's control rate, under the watchdog."""
    from spaars_robot.config.tasks import load_task
    from spaars_robot.runtime.client import Client, ClientCurve
    from spaars_robot.runtime.sim_client import run_sim, task_schema
    from spaars_robot.safety.spec import load_safety_spec

    if (curve_secret is None) != (curve_server_key is None):
        raise SpaarsError("CurveZMQ needs both --curve-secret and --curve-server-key")
    curve = ClientCurve(curve_secret, curve_server_key) if curve_secret is not None else None
    spec = load_task(task)
    watchdog = load_safety_spec(safety or spec.name).watchdog
    rt, context = _enter_realtime(realtime)
    if rt is not None:
        console.print(f"control loop: {rt.describe()}", highlight=False)
    with Client(connect, task_schema(spec), timeout_s=1.0 / spec.control_rate_hz, curve=curve,
                context=context) as client:
        summary = run_sim(client, spec, episodes, seed, realtime=not fast, max_steps=max_steps, watchdog=watchdog)
    print_sim_summary(summary)


def _enter_realtime(priority: int | None):
    """(RealtimeState, a ZeroMQ context whose I/O thread is SCHED_FIFO too) for --realtime, else (None, None)."""
    if priority is None:
        return None, None
    from spaars_robot.runtime.realtime import enter_realtime, realtime_context

    state = enter_realtime(priority)
    return state, realtime_context(priority)


@app.command("demo")
def demo_cmd(
    bundle: Annotated[str, typer.Option(help="Policy bundle to serve.")] = DEFAULT_BUNDLE,
    episodes: Annotated[int, typer.Option(min=1)] = 3,
    bind: Annotated[str | None, typer.Option(
        help="Where the demo's server listens and its robot connects (default: an ipc socket in a temp dir).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the first episode.")] = 0,
) -> None:
    """The main job: serve the shipped bundle in a subprocess, drive the simulated robot, stop cleanly."""
    from spaars_robot.config.tasks import load_task
    from spaars_robot.export.bundle import load_bundle
    from spaars_robot.runtime.client import Client
    from spaars_robot.runtime.service import start_server_process, stop_server_process, wait_for_server
    from spaars_robot.runtime.sim_client import run_sim, task_schema

    path = resolve_bundle(bundle)
    if not path.exists():
        raise SpaarsError(f"bundle {path} not found; train a run and `spaars-robot export RUN_DIR --onnx --out {bundle}`")
    loaded = load_bundle(path)
    spec = load_task(loaded.manifest.task)
    with tempfile.TemporaryDirectory(prefix="spaars-demo-") as tmp:
        endpoint = bind or f"ipc://{tmp}/action.sock"
        server = start_server_process(path, endpoint)
        try:
            with Client(endpoint, task_schema(spec), timeout_s=1.0 / spec.control_rate_hz,
                        bundle_sha256=loaded.sha256) as client:
                wait_for_server(client, server)
                console.print(f"server up on {endpoint}; {episodes} episode(s) of {spec.name} at "
                              f"{spec.control_rate_hz:g} Hz", highlight=False)
                summary = run_sim(client, spec, episodes, seed)
        finally:
            code = stop_server_process(server)
    print_sim_summary(summary)
    console.print(f"server stopped cleanly (exit {code})" if code == 0 else f"server exited with {code}")


MAX_TRANSITIONS_PRINTED = 20


def print_sim_summary(summary) -> None:
    from rich.table import Table

    table = Table(title=f"{summary.task}: {len(summary.episodes)} episode(s)")
    for column in ("seed", "steps", "return", "normalised", "deadline misses", "late ticks", "raw/latent/fallback/hold"):
        table.add_column(column)
    for ep in summary.episodes:
        table.add_row(str(ep.seed), str(ep.steps), f"{ep.episode_return:.1f}", f"{ep.normalized_score:.1f}",
                      str(ep.deadline_misses), str(ep.late_ticks),
                      "/".join(str(ep.sources[s]) for s in ("raw", "latent", "fallback", "hold")))
    console.print(table)
    share = ", ".join(f"{k} {v:.1%}" for k, v in summary.source_share.items())
    console.print(f"mean return {summary.mean_return:.1f}, normalised score {summary.mean_normalized_score:.1f}, "
                  f"deadline misses {summary.deadline_misses}/{summary.steps} (+{summary.late_ticks} late ticks), "
                  f"fallbacks {summary.fallbacks}; {share}; round trip p50 {summary.rtt_p50_us:.0f} us, "
                  f"p99 {summary.rtt_p99_us:.0f} us", highlight=False)
    limits = ", ".join(f"{k} {v}" for k, v in summary.limit_counts.items() if v) or "none acted"
    console.print(f"safety limits: {limits}; stale replies dropped {summary.stale_replies}, oldest applied reply "
                  f"{summary.max_applied_age_ms:.2f} ms", highlight=False)
    if summary.watchdog_transitions:
        shown = summary.watchdog_transitions[:MAX_TRANSITIONS_PRINTED]
        more = len(summary.watchdog_transitions) - len(shown)
        console.print(f"watchdog transitions ({len(summary.watchdog_transitions)}"
                      f"{f', the first {len(shown)} shown' if more else ''}):", highlight=False)
        for t in shown:
            console.print(f"  {t.t_s:8.3f} s  {t.previous} -> {t.state}: {t.reason}", highlight=False)
        if more:
            console.print(f"  ... {more} more", highlight=False)
