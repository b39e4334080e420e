"""`train --precision auto|fp32|bf16`: bf16 for the CVAE only where this machine runs it faster.

Machines differ from one sitting to the next: an Intel VM ran bf16 autocast at 0.82-0.93x of fp32 on every
256-wide update, an AMD EPYC with avx512_bf16 at 1.3-2.0x (BENCHMARKS "Training throughput"). So `auto`
measures the real pretraining update both ways for a few seconds before training (interleaved rounds, the
median kept) and picks bf16 only when it is at least `MIN_SPEEDUP` faster; the measurement and the choice are
recorded in the run. What bf16 covers is deliberately narrow (algos/offline.py): the CVAE's passes; critics,
values, targets and advantages stay fp32. `fp32` stays the default until bf16's learning curves have been
compared with fp32's on training seeds.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

from spaars_robot.config.training import PretrainConfig
from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.errors import SpaarsError

PRECISIONS = ("fp32", "bf16", "auto")
MIN_SPEEDUP = 1.1  # below this the measurement's noise could pick either; fp32 is the reference


@dataclass(frozen=True)
class PrecisionChoice:
    requested: str
    bf16: bool
    fp32_updates_per_second: float | None = None
    bf16_updates_per_second: float | None = None

    @property
    def speedup(self) -> float | None:
        if not self.fp32_updates_per_second or self.bf16_updates_per_second is None:
            return None
        return self.bf16_updates_per_second / self.fp32_updates_per_second

    def record(self) -> dict:
        return {**asdict(self), "chosen": "bf16" if self.bf16 else "fp32", "bf16_speedup": self.speedup}

    def describe(self) -> str:
        if self.speedup is None:
            return f"precision {self.record()['chosen']} (as asked)"
        return (f"precision auto -> {self.record()['chosen']}: bf16 CVAE pass {self.speedup:.2f}x fp32 "
                f"({self.bf16_updates_per_second:.0f} vs {self.fp32_updates_per_second:.0f} pretraining updates/s)")


def measure(dataset: OfflineDataset, cfg: PretrainConfig, seed: int, updates: int = 150, rounds: int = 2,
            device: str = "cpu") -> tuple[float, float]:
    """Median pretraining updates/s (fp32, bf16), each from `rounds` interleaved runs of the real loop on `device`."""
    from spaars_robot.train.pretrain import pretrain

    probe = cfg.model_copy(update={"steps": updates, "latent_actor_start": 0.0, "support_samples": 100})
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for bf16 in (False, True):
            _, info = pretrain(dataset, probe, seed, bf16, device=device)
            rates[bf16].append(info["updates_per_second"])
    return statistics.median(rates[False]), statistics.median(rates[True])


def choose_precision(requested: str, dataset: OfflineDataset | None, cfg: PretrainConfig, seed: int = 0,
                     updates: int = 150, device: str = "cpu") -> PrecisionChoice:
    if requested not in PRECISIONS:
        raise SpaarsError(f"--precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return PrecisionChoice(requested, requested == "bf16")
    if dataset is None:  # sac: no offline pretraining, nothing runs under the autocast
        return PrecisionChoice(requested, False)
    fp32, bf16 = measure(dataset, cfg, seed, updates, device=device)
    return PrecisionChoice(requested, bf16 >= MIN_SPEEDUP * fp32, fp32, bf16)
