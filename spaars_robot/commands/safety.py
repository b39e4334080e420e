"""`spaars-robot keys` (CurveZMQ key pairs, bundle signing key) and `spaars-robot dashboard`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from spaars_robot.commands.app import app, console


@app.command("keys")
def keys(
    out: Annotated[Path, typer.Option(help="Directory for the key files.")] = Path("keys"),
    client: Annotated[list[str] | None, typer.Option(
        "--client", help="Client (controller) name; repeat for several clients [default: controller].")] = None,
    signing: Annotated[bool, typer.Option(help="Also make an ed25519 bundle signing key.")] = True,
    curve: Annotated[bool, typer.Option(help="Make CurveZMQ server and client key pairs.")] = True,
    force: Annotated[bool, typer.Option(help="Replace existing key files.")] = False,
) -> None:
    """Make CurveZMQ key pairs (server + allow-listed clients) and a bundle signing key."""
    from spaars_robot.security.keys import ALLOW_LIST_DIR, write_curve_keys
    from spaars_robot.security.signing import write_signing_key

    if curve:
        for path in write_curve_keys(out, client or ["controller"], force):
            console.print(f"wrote {path}")
        console.print(f"server allow-list: {out / ALLOW_LIST_DIR} (public keys only; copy *.key_secret "
                      "files to their controllers, never to the server)")
    if signing:
        secret, public = write_signing_key(out, force=force)
        console.print(f"wrote {secret} (keep private: signs bundles) and {public} (give to robots as trusted key)")


@app.command("dashboard")
def dashboard(
    telemetry_connect: Annotated[str, typer.Option(
        help="The server's telemetry endpoint (its --telemetry-bind) to subscribe to.")] = "tcp://127.0.0.1:5556",
    port: Annotated[int, typer.Option(help="HTTP port on 127.0.0.1 for the page.")] = 8765,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0 = until Ctrl-C).")] = 0.0,
) -> None:
    """Serve a live safety dashboard (action vs limits, gate/fallback rates, support, latency, watchdog)."""
    from spaars_robot.telemetry.dashboard import Dashboard

    board = Dashboard(telemetry_endpoint=telemetry_connect, port=port)
    url = board.start()
    console.print(f"dashboard at {url} (subscribed to {telemetry_connect}); Ctrl-C to stop", highlight=False)
    try:
        deadline = time.monotonic() + duration if duration > 0 else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        board.stop()
