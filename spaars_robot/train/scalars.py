"""Where a run's scalars go: TensorBoard always, Weights & Biases when the run asks for it (`train --wandb`).

Layout under the run directory: `tb/` holds the online scalars (update metrics and `eval/*`, step = env steps) and
`tb/pretrain/` pretraining's losses (`pretrain/*`, step = pretraining updates). `tensorboard --logdir RUN/tb` shows
both. They are two TensorBoard runs because they are two step axes: a resume purges every event at or after its
step in a log directory, and an online resume at env step N must not purge pretraining's points past update N.

Nothing is written twice after a resume. Online: the writer is opened with `purge_step` just past the checkpoint's
step, so TensorBoard drops what the killed process logged after its last checkpoint. Pretraining: its writer purges from
the first point it writes, which is the next point after a partial checkpoint (the killed attempt logged the same
grid) or, when the result came from the cache, the first point of the cached history, rewritten in full.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from spaars_robot.train.wandb_log import WandbRun


class ScalarLog:
    def __init__(self, run_dir: Path, wandb: WandbRun | None = None) -> None:
        self.tb_dir = Path(run_dir) / "tb"
        self.wandb = wandb
        self._pretrain_writer = None
        self._online_writer = None

    # -- pretraining ---------------------------------------------------------------------------------------
    def pretrain(self, step: int, values: Mapping[str, float]) -> None:
        """One point of pretraining's loss history (the points train.log gets and the cache stores)."""
        from torch.utils.tensorboard import SummaryWriter

        if self._pretrain_writer is None:
            self._pretrain_writer = SummaryWriter(str(self.tb_dir / "pretrain"), purge_step=step)
        for key, value in values.items():
            self._pretrain_writer.add_scalar(f"pretrain/{key}", float(value), step)
        self._pretrain_writer.flush()
        if self.wandb is not None:
            self.wandb.log_pretrain(step, values)

    def pretrain_history(self, history: list[dict]) -> None:
        """A cached pretraining's whole history (the run did not compute it, so nothing was logged live)."""
        for point in history:
            self.pretrain(int(point["step"]), {k: v for k, v in point.items() if k != "step"})

    # -- online ------------------------------------------------------------------------------------------
    def start_online(self, step: int, resumed: bool) -> None:
        """Open the online writer. A fresh start purges whatever an earlier attempt left (it never checkpointed);
        a resume from the checkpoint at `step` purges what came after it: everything at `step` itself was logged
        before that checkpoint was written (evaluation in on_step, checkpoint at the episode end)."""
        from torch.utils.tensorboard import SummaryWriter

        self._online_writer = SummaryWriter(str(self.tb_dir), purge_step=step + 1 if resumed else 0)

    def online(self, step: int, values: Mapping[str, float | torch.Tensor]) -> None:
        """Scalars at env step `step` (update metrics, evaluation rows)."""
        floats = {key: float(value) for key, value in values.items()}
        for key, value in floats.items():
            self._online_writer.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log_online(step, floats)

    def close(self) -> None:
        for writer in (self._pretrain_writer, self._online_writer):
            if writer is not None:
                writer.close()
        self._pretrain_writer = self._online_writer = None
        if self.wandb is not None:
            self.wandb.finish()
