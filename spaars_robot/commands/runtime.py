"""`spaars-robot export | serve | sim | demo`: bundle a trained run, serve it, drive a simulated robot with it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from spaars_robot.app import app, console
from spaars_robot.errors import SpaarsError

DEFAULT_BUNDLE = "policies/hopper-default"


def resolve_bundle(path: str) -> Path:
    """A bundle path as given, else relative to the repository root (where `policies/` ships)."""
    from spaars_robot.config.loading import repo_root

    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    return repo_root() / given


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Training run directory (runs/<name>).")],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory to write, e.g. policies/hopper-mine.")],
    onnx: Annotated[bool, typer.Option("--onnx/--no-onnx", help="Export format; ONNX is the only one.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing bundle at --out.")] = False,
) -> None:
    """Export a trained run as an ONNX policy bundle; refuses to write one that fails torch/ORT parity."""
    if not onnx:
        raise SpaarsError("only --onnx export is supported")
    from spaars_robot.export.onnx_export import export_bundle
    from spaars_robot.train.artifacts import load_run_for_export

    stack, info = load_run_for_export(run_dir)
    manifest = export_bundle(stack, info, out, overwrite=overwrite)
    worst = max(manifest.parity.max_abs_error.values())
    console.print(f"wrote {out} (task {manifest.task}, parity max abs error {worst:.2e} "
                  f"over {manifest.parity.recorded_obs + manifest.parity.random_obs} observations)")


@app.command("serve")
def serve_cmd(
    bundle: Annotated[str, typer.Option(help="Policy bundle directory.")] = DEFAULT_BUNDLE,
    bind: Annotated[list[str] | None, typer.Option(
        help="Endpoint (loopback tcp or ipc://); repeatable. Default tcp://127.0.0.1:5555.")] = None,
) -> None:
    """Serve a verified bundle over ZeroMQ until SIGINT/SIGTERM, then print the request counts."""
    from spaars_robot.export.bundle import load_bundle
    from spaars_robot.runtime.server import DEFAULT_ENDPOINT, ActionServer

    loaded = load_bundle(resolve_bundle(bundle))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with ActionServer(loaded, bind or [DEFAULT_ENDPOINT]) as server:
        console.print(f"serving {loaded.path} ({loaded.manifest.task}, bundle {loaded.sha256[:12]}) "
                      f"on {', '.join(server.bound)}", highlight=False)
        sys.stdout.flush()
        server.serve(stop)
        console.print(f"stopped: {server.stats()}", highlight=False)


@app.command("sim")
def sim_cmd(
    connect: Annotated[str, typer.Option(help="Server endpoint.")] = "tcp://127.0.0.1:5555",
    task: Annotated[str, typer.Option(help="Task name or YAML path; must match the served bundle.")] = "hopper",
    episodes: Annotated[int, typer.Option(min=1)] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the first episode; episode i uses seed + i.")] = 0,
    max_steps: Annotated[int | None, typer.Option(help="Cut episodes after this many steps.")] = None,
    fast: Annotated[bool, typer.Option(help="Step as fast as replies come instead of at the control rate.")] = False,
) -> None:
    """Play the simulated robot against a running server at the task's control rate."""
    from spaars_robot.config.tasks import load_task
    from spaars_robot.runtime.client import Client
    from spaars_robot.runtime.sim_client import run_sim, task_schema

    spec = load_task(task)
    with Client(connect, task_schema(spec), timeout_s=1.0 / spec.control_rate_hz) as client:
        summary = run_sim(client, spec, episodes, seed, realtime=not fast, max_steps=max_steps)
    print_sim_summary(summary)


@app.command("demo")
def demo_cmd(
    bundle: Annotated[str, typer.Option(help="Policy bundle to serve.")] = DEFAULT_BUNDLE,
    episodes: Annotated[int, typer.Option(min=1)] = 3,
    endpoint: Annotated[str | None, typer.Option(help="Server endpoint (default: ipc socket in a temp dir).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the first episode.")] = 0,
) -> None:
    """The main job: serve the shipped bundle in a subprocess, drive the simulated robot, stop cleanly."""
    from spaars_robot.config.tasks import load_task
    from spaars_robot.export.bundle import load_bundle
    from spaars_robot.runtime.client import Client
    from spaars_robot.runtime.sim_client import run_sim, task_schema

    path = resolve_bundle(bundle)
    if not path.exists():
        raise SpaarsError(f"bundle {path} not found; train a run and `spaars-robot export RUN_DIR --onnx --out {bundle}`")
    loaded = load_bundle(path)
    spec = load_task(loaded.manifest.task)
    with tempfile.TemporaryDirectory(prefix="spaars-demo-") as tmp:
        endpoint = endpoint or f"ipc://{tmp}/action.sock"
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


def start_server_process(bundle: Path, endpoint: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "spaars_robot.cli", "serve", "--bundle", str(bundle),
                             "--bind", endpoint], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_server(client, server: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Handshake until the server answers; a server that dies first is reported with its own error line."""
    from spaars_robot.runtime.client import ServerUnavailable

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SpaarsError(f"server exited with {server.returncode}: {server.stderr.read().strip()}")
        try:
            client.connect(timeout_s=0.5)
            return
        except ServerUnavailable:
            time.sleep(0.05)
    raise SpaarsError(f"server did not answer within {timeout_s:g} s")


def stop_server_process(server: subprocess.Popen, timeout_s: float = 5.0) -> int:
    """SIGTERM (the server finishes its current request and closes its socket), then SIGKILL if it hangs."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout_s)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return server.returncode


def print_sim_summary(summary) -> None:
    from rich.table import Table

    table = Table(title=f"{summary.task}: {len(summary.episodes)} episode(s)")
    for column in ("seed", "steps", "return", "normalised", "deadline misses", "raw/latent/fallback/hold"):
        table.add_column(column)
    for ep in summary.episodes:
        table.add_row(str(ep.seed), str(ep.steps), f"{ep.episode_return:.1f}", f"{ep.normalized_score:.1f}",
                      str(ep.deadline_misses), "/".join(str(ep.sources[s]) for s in ("raw", "latent", "fallback", "hold")))
    console.print(table)
    share = ", ".join(f"{k} {v:.1%}" for k, v in summary.source_share.items())
    console.print(f"mean return {summary.mean_return:.1f}, normalised score {summary.mean_normalized_score:.1f}, "
                  f"deadline misses {summary.deadline_misses}/{summary.steps}, fallbacks {summary.fallbacks}; "
                  f"{share}; round trip p50 {summary.rtt_p50_us:.0f} us, p99 {summary.rtt_p99_us:.0f} us",
                  highlight=False)
