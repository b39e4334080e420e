"""`spaars-robot transition replay`: where another transition rule would have switched, on a finished run's own
logged checks (report/transition_replay.py), so the rule can be tuned on training seeds without training again."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spaars_robot.commands.app import app, console

transition_app = typer.Typer(help="The latent -> gated switch of SPAARS runs.", no_args_is_help=True)
app.add_typer(transition_app, name="transition")


def seed_runs(paths: list[Path]) -> list[Path]:
    """Each path as given when it is a summary file, else the seed runs it is or holds."""
    from spaars_robot.errors import SpaarsError
    from spaars_robot.export.from_run import seed_run_dirs

    out: list[Path] = []
    for path in paths:
        found = [path] if path.is_file() else seed_run_dirs(path)
        if not found:
            raise SpaarsError(f"{path}: not a run directory (no config.yaml, no seed*/config.yaml below it)")
        out.extend(found)
    return out


@transition_app.command("replay")
def replay(
    runs: Annotated[list[Path], typer.Argument(help="SPAARS runs: directories (runs/<name> or runs/<name>/seed<N>) or compact "
                                                  "summaries (benchmarks/results/...json).")],
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="A transition field of the rule to replay, e.g. rule=evidence or t_min=10000 (repeatable; "
                      "the online.transition. prefix of train --set is accepted). None: the run's own rule.")] = None,
    checks: Annotated[bool, typer.Option("--checks", help="Print every check's reason, not only the decision.")] = False,
    out: Annotated[Path | None, typer.Option(help="Also write every run's replay here as JSON.")] = None,
) -> None:
    """Replay each run's logged transition checks (return, novelty, BC error, gate rate per evaluation) under
    the given rule: first the run's own settings, which must reproduce its logged switch, then the candidate's.
    Exact up to the run's own switch (nothing of the latent phase depends on the rule); beyond it, 'not by N'."""
    from spaars_robot.data.files import atomic_write_json
    from spaars_robot.report.transition_replay import as_json, describe, parse_sets, replay_run

    overrides = parse_sets(set_ or [])
    results = [replay_run(run_dir, overrides) for run_dir in seed_runs(runs)]
    for result in results:
        console.print(f"{result.source} (seed {result.seed})", highlight=False)
        own = ("latent-only run (SPAARS's latent phase continued; nothing to reproduce)" if result.own is None
               else describe(result.own))
        console.print(f"  own rule, reproduced: {own}", highlight=False, soft_wrap=True)
        console.print(f"  replayed rule:        {describe(result.candidate)}", highlight=False, soft_wrap=True)
        if checks:
            for step, reason in result.candidate.checks:
                console.print(f"    {step:>7}: {reason}", highlight=False, soft_wrap=True)
    fired = sum(r.fired_before_cap for r in results)
    console.print(f"replayed rule fired before t_max in {fired} of {len(results)} runs", highlight=False)
    if out is not None:
        atomic_write_json(out, {"overrides": overrides, "runs": [as_json(r) for r in results]})
        console.print(f"wrote {out}", highlight=False)
