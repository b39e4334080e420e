"""Optional Weights & Biases logging (`train --wandb PROJECT`): off by default, imported only when asked for.

wandb is an optional extra (`pip install 'spaars-robot[wandb]'`, pinned in pyproject.toml); nothing else in the
project needs it or the network. `WANDB_MODE=offline` writes the run under `RUN/wandb/` for a later `wandb sync`.

One W&B run per training run: its id is kept in `RUN/wandb_run_id`, so a resumed run continues the same W&B run.
W&B cannot take back points the way TensorBoard's purge does, so after a resume the steps since the last checkpoint
appear twice, with the same values (a resume is exact). Pretraining and online scalars have their own step axes
(`pretrain/update`, `env_step`), declared with `define_metric`.
"""
from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spaars_robot.errors import SpaarsError

INSTALL_HINT = "pip install 'spaars-robot[wandb]'"


def import_wandb() -> Any:
    """The wandb module, or the one-line error a user without it gets."""
    try:
        import wandb
    except ImportError as exc:
        raise SpaarsError(f"--wandb: the wandb package is not installed ({INSTALL_HINT}), or run without --wandb"
                          ) from exc
    return wandb


class WandbRun:
    def __init__(self, project: str, run_dir: Path, name: str, config: dict) -> None:
        wandb = import_wandb()
        run_dir = Path(run_dir)
        id_file = run_dir / "wandb_run_id"
        if not id_file.exists():
            id_file.write_text(secrets.token_hex(8))
        self.run = wandb.init(project=project, name=name, id=id_file.read_text().strip(), resume="allow",
                              dir=str(run_dir), config=config)
        self.run.define_metric("pretrain/update")
        self.run.define_metric("pretrain/*", step_metric="pretrain/update")
        self.run.define_metric("env_step")
        self._online_keys: set[str] = set()

    def log_pretrain(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log({"pretrain/update": step, **{f"pretrain/{k}": float(v) for k, v in values.items()}})

    def log_online(self, step: int, values: Mapping[str, float]) -> None:
        for key in values.keys() - self._online_keys:  # per key: globs would also match pretrain/*
            self.run.define_metric(key, step_metric="env_step")
            self._online_keys.add(key)
        self.run.log({"env_step": step, **values})

    def finish(self) -> None:
        self.run.finish()
