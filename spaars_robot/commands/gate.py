"""`spaars-robot gate fit`: fit a run's rollout gate (train/gate_fit.py), which `export --gate rollout` deploys."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spaars_robot.commands.app import app, console

gate_app = typer.Typer(help="Gates between the raw and the latent controller of a trained run.", no_args_is_help=True)
app.add_typer(gate_app, name="gate")


def parse_margins(text: str) -> tuple[float, ...]:
    import math

    from spaars_robot.errors import SpaarsError

    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise SpaarsError(f"gate fit: --margins {text!r}: expected comma-separated finite numbers, e.g. -0.5,0,0.5")
    return values


@gate_app.command("fit")
def fit(
    run_dir: Annotated[Path, typer.Argument(help="A finished spaars / latent / raw run (runs/<name>/seed<N>).")],
    states: Annotated[int, typer.Option(help="States to branch in the simulator.")] = 1200,
    repeats: Annotated[int, typer.Option(help="Paired repeats per state (>= 2).")] = 4,
    horizon: Annotated[int, typer.Option(help="Steps followed after the first action.")] = 100,
    lead_steps: Annotated[int, typer.Option(help="Steps each branch keeps its controller before the deployed "
                                                 "policy follows (1: only the first action differs).")] = 1,
    hold_steps: Annotated[int, typer.Option(help="The fitted gate decides every N steps and holds its decision in "
                                                 "between (set it to --lead-steps: the gate then executes the "
                                                 "decision the branches measured).")] = 1,
    stride: Annotated[int, typer.Option(help="Steps between branched states along an episode.")] = 10,
    episodes: Annotated[int, typer.Option(help="Evaluation episodes per controller compared.")] = 20,
    threads: Annotated[int, typer.Option(help="Torch threads.")] = 1,
    rounds: Annotated[int, typer.Option(help="DAgger rounds: each further round branches the states the previous "
                                             "round's gate visits and refits on all of them.")] = 1,
    select: Annotated[str, typer.Option(help="Choose the gate by cross-validated per-state gain (gain) or by each "
                                             "candidate's closed-loop return on episodes of its own (return).")] = "gain",
    selection_episodes: Annotated[int, typer.Option(help="--select return: episodes per candidate.")] = 10,
    margins: Annotated[str | None, typer.Option(help="Candidate decision margins in sds of the measured differences, "
                                              "comma-separated; negative ones open the gate unless raw is predicted "
                                              "clearly worse (default: 0,0.25,0.5,1).")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the report here (e.g. benchmarks/results/...).")] = None,
) -> None:
    """Branch the run's simulator at states of its deployed policy, fit a gate to which first action (raw or
    latent) really returns more, and compare it with the critic gate, always-raw and always-latent on the run's
    evaluation episodes. Writes RUN/rollout_gate.pt and RUN/rollout_gate.json; nothing of the run is changed."""
    from pydantic import ValidationError

    from spaars_robot.data.files import atomic_write_json
    from spaars_robot.errors import SpaarsError
    from spaars_robot.export.from_run import seed_run_dir
    from spaars_robot.train.gate_fit import GateFitSettings, fit_gate

    try:
        chosen = {} if margins is None else {"margins": parse_margins(margins)}
        settings = GateFitSettings(states=states, repeats=repeats, horizon=horizon, lead_steps=lead_steps,
                                   hold_steps=hold_steps,
                                   stride=stride, episodes=episodes,
                                   threads=threads, rounds=rounds, select=select,
                                   selection_episodes=selection_episodes, **chosen)
    except ValidationError as err:
        raise SpaarsError("gate fit: " + "; ".join(
            (f"--{str(e['loc'][0]).replace('_', '-')}: " if e["loc"] else "") + e["msg"]
            for e in err.errors())) from err
    report = fit_gate(seed_run_dir(run_dir), settings, log=lambda line: console.print(line, highlight=False))
    if out is not None:
        atomic_write_json(out, report)
        console.print(f"wrote {out}", highlight=False)
