"""Training throughput on this CPU (issue 3, "Speed: close to what this CPU can do"), all in one run.

    MUJOCO_GL=egl nice -n 5 .venv/bin/python benchmarks/train_throughput.py --dataset PATH          # full
    MUJOCO_GL=egl .venv/bin/python benchmarks/train_throughput.py --seconds 2 --rounds 1 --no-seeds  # quick look

Why one invocation: the machine is shared (dataset collections, training runs), so absolute rates move
with the load; ratios are only meaningful between numbers taken side by side. Every measurement is
therefore repeated in `--rounds` interleaved rounds (round-robin over all variants) and the median kept.

What is measured:
  peak     2-thread fp32 and bf16 matmul GFLOP/s (batched 256x256 @ 256x256, and a large square);
  cases    updates/s of one full update (batch sampling included, as in the real loop) for the IQL update,
           the offline pretraining step (CVAE + IQL + PLAS latent actor, via `pretrain()` itself) with CVAE
           width 256 and 750, the SPAARS online update in the latent and gated phases, and SAC; each fp32
           and under bf16 autocast (fp32 master weights and optimiser; since 2026-12-05 every critic and value
           head stays fp32 under it, as `online.update_precision: bf16` runs), and compiled where it is cheap
           (IQL losses, CVAE loss); the SPAARS updates also with `online.gate.critic=held_out` (`fp32+held-out`:
           its "x fp32" column is that critic's cost); `--cases` picks cases by name. FLOPs of one update are
           counted with FlopCounterMode (forward+backward),
           so achieved GFLOP/s can be set against the measured peak;
  seeds    5 seeds of the pretraining step: sequential in one 2-thread process, as 2 parallel 1-thread
           processes, and as 5 parallel 1-thread processes (aggregate updates/s over the makespan);
  d3rlpy   d3rlpy's IQL on the same dataset, run by its own venv (benchmarks/.venv-d3rlpy) through
           benchmarks/d3rlpy_iql.py, interleaved with our IQL case in every round.
Results: a table on stdout and benchmarks/results/train_throughput.json.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from spaars_robot.algos import iql as iql_module
from spaars_robot.algos.iql import IQLAgent
from spaars_robot.algos.sac import SAC, SACConfig
from spaars_robot.algos.spaars import SPAARSAgent
from spaars_robot.config.training import PretrainConfig, TrainConfig
from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.data.replay import ReplayBuffer, mixed_batch
from spaars_robot.nn.cvae import CVAE
from spaars_robot.nn.normalizer import ObsNormalizer
from spaars_robot.train import pretrain as pretrain_module
from spaars_robot.train.pretrain import OfflineNets, normalized_offline_buffer, pretrain

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "train_throughput.json"
D3RLPY_PYTHON = HERE / ".venv-d3rlpy" / "bin" / "python"
FALLBACK_ROOT = Path("/tmp/bench_ds")
FALLBACK_ID = "spaars/hopper-random-v0"
SEEDS = 5


# -- machine -------------------------------------------------------------------------------------------
def machine_info() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    return {"nproc": os.cpu_count(), "cpu_model": model, "torch": torch.__version__,
            "isa": [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f" {f}" in flags],
            "python": platform.python_version()}


def load_average() -> dict:
    """`uptime` text and the 1/5/15-minute load: the benchmark shares the machine, so record how busy it was."""
    text = subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()
    return {"uptime": text, "loadavg": [round(x, 2) for x in os.getloadavg()]}


# -- timing ----------------------------------------------------------------------------------------------
@dataclass
class Rate:
    updates: int
    wall_s: float
    cpu_s: float

    @property
    def per_s(self) -> float:
        return self.updates / self.wall_s

    def as_dict(self) -> dict:
        return {"updates": self.updates, "wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3),
                "updates_per_s": round(self.per_s, 2)}


def time_loop(step: Callable[[], None], seconds: float) -> Rate:
    """Run `step` until `seconds` of wall time have passed; the clock is read once per update only."""
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    deadline = t0 + seconds
    while True:
        step()
        n += 1
        if time.perf_counter() >= deadline:
            break
    return Rate(n, time.perf_counter() - t0, time.process_time() - c0)


def count_flops(step: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


# -- matmul peak -----------------------------------------------------------------------------------------
def matmul_peak(dtype: torch.dtype, seconds: float) -> dict:
    """GFLOP/s of a batched 256x256 @ 256x256 product (our layer shape) and a 2048 square product.

    Also GFLOP per CPU-second: on a shared machine the wall rate measures our share of the CPU as much as
    the kernel; per CPU-second (threads sleep while waiting under OMP_WAIT_POLICY=PASSIVE) it does not.
    """
    out = {}
    for name, (batch, n) in {"bmm256x64": (64, 256), "square2048": (1, 2048)}.items():
        a, b = torch.randn(batch, n, n, dtype=dtype), torch.randn(batch, n, n, dtype=dtype)
        for _ in range(3):
            torch.bmm(a, b)
        rate = time_loop(lambda a=a, b=b: torch.bmm(a, b), seconds)
        out[name] = round(2.0 * batch * n**3 * rate.per_s / 1e9, 1)
        out[f"{name}_per_cpu_s"] = round(2.0 * batch * n**3 * rate.updates / rate.cpu_s / 1e9, 1)
    return out


# -- cases -----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def patched(obj: object, name: str, value: object) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def compiled_losses(enabled: bool) -> Iterator[None]:
    """torch.compile the IQL and CVAE losses (forward+backward graphs) in the real code paths."""
    if not enabled:
        yield
        return
    fn = torch.compile(iql_module.iql_losses)
    with patched(iql_module, "iql_losses", fn), patched(pretrain_module, "iql_losses", fn), \
            patched(CVAE, "loss", torch.compile(CVAE.loss)):
        yield


@dataclass
class Case:
    """One update kind in one numeric variant; `step()` does one full update including batch sampling."""

    name: str
    variant: str
    step: Callable[[], None] | None = None
    pretrain_cfg: PretrainConfig | None = None
    compile: bool = False
    bf16: bool = False
    held_out: bool = False  # SPAARS with online.gate.critic=held_out: the gate's own critic fitted every update
    flops: int = 0
    setup_s: float = 0.0
    overhead_cpu_s: float = 0.0  # CPU time of pretrain() outside its loop (set-up, calibration)
    rounds: list[dict] = field(default_factory=list)
    error: str | None = None


def small_train_config(dataset_path: str, held_out: bool = False) -> TrainConfig:
    config = TrainConfig(task="hopper", dataset=dataset_path, threads=2)
    if held_out:
        gate = config.online.gate.model_copy(update={"critic": "held_out"})
        config = config.model_copy(update={"online": config.online.model_copy(update={"gate": gate})})
    return config


def random_nets(dataset: OfflineDataset, cfg: PretrainConfig) -> OfflineNets:
    """Untrained networks with the dataset's normaliser: throughput does not depend on the weights."""
    torch.manual_seed(0)
    nets = OfflineNets(dataset.obs_dim, dataset.action_dim, cfg)
    mean, std = dataset.observation_stats()
    nets.normalizer = ObsNormalizer(mean, std)
    return nets


def autocast(enabled: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def build_step(name: str, dataset: OfflineDataset, dataset_path: str, bf16: bool,
               config: TrainConfig | None = None) -> Callable[[], None]:
    """Closure doing one update of `name` with the project's own classes, as the runner calls them."""
    config = config or small_train_config(dataset_path)
    generator = torch.Generator().manual_seed(0)
    if name == "sac":
        sac = SAC(dataset.obs_dim, dataset.action_dim, SACConfig(), seed=0)
        buffer = ReplayBuffer.from_tensors(dataset.tensors())

        def sac_step() -> None:
            batch = buffer.sample(256, generator)
            with autocast(bf16):
                sac.update(batch)
        return sac_step
    nets = random_nets(dataset, config.pretrain)
    offline = normalized_offline_buffer(dataset, nets)
    if name == "iql":
        agent = IQLAgent(nets, config, generator)

        def iql_step() -> None:
            batch = offline.sample(config.online.batch_size, generator)
            with autocast(bf16):
                agent.update(batch)
        return iql_step
    online = normalized_offline_buffer(dataset, nets)  # stands in for a filled online buffer
    spaars = SPAARSAgent(nets, config, generator)
    spaars.phase = "gated" if name == "spaars_gated" else "latent"

    def spaars_step() -> None:
        batch = mixed_batch(offline, online, config.online.batch_size, config.online.offline_ratio, generator)
        with autocast(bf16):
            spaars.update(batch)
    return spaars_step


def pretrain_cfg(width: int, steps: int) -> PretrainConfig:
    """Full step from the first update on (latent actor from step 0); small calibration sample."""
    return PretrainConfig(steps=steps, cvae_hidden=(width, width), latent_actor_start=0.0, support_samples=100)


def run_pretrain(dataset: OfflineDataset, case: Case, steps: int) -> Rate:
    """Time `pretrain()` itself (its own loop timer: calibration and setup excluded)."""
    assert case.pretrain_cfg is not None
    cfg = case.pretrain_cfg.model_copy(update={"steps": steps})
    c0 = time.process_time()
    with compiled_losses(case.compile):
        _, info = pretrain(dataset, cfg, seed=0, bf16=case.bf16)
    return Rate(steps, info["seconds"], time.process_time() - c0)


def pretrain_step_flops(dataset: OfflineDataset, case: Case) -> int:
    """FLOPs of one pretraining step = FLOPs(pretrain 2 steps) - FLOPs(pretrain 1 step) (setup cancels)."""
    assert case.pretrain_cfg is not None
    totals = []
    for steps in (1, 2):
        cfg = case.pretrain_cfg.model_copy(update={"steps": steps})
        with FlopCounterMode(display=False) as counter:
            pretrain(dataset, cfg, seed=0, bf16=case.bf16)
        totals.append(counter.get_total_flops())
    return int(totals[1] - totals[0])


def make_cases(args: argparse.Namespace) -> list[Case]:
    cases: list[Case] = []
    for name in ("iql", "pretrain_cvae256", "pretrain_cvae750", "spaars_latent", "spaars_gated", "sac"):
        for variant in ("fp32", "bf16"):
            cases.append(Case(name, variant, bf16=variant == "bf16"))
        if not args.no_compile and name in ("iql", "pretrain_cvae256"):
            cases.append(Case(name, "fp32+compile", compile=True))
        if name.startswith("spaars_"):  # its "x fp32 (paired)" column is then the held-out critic's cost
            cases.append(Case(name, "fp32+held-out", held_out=True))
    if args.cases:
        cases = [c for c in cases if c.name in args.cases.split(",")]
    for case in cases:
        if case.name.startswith("pretrain_"):
            case.pretrain_cfg = pretrain_cfg(int(case.name.removeprefix("pretrain_cvae")), 1)
    return cases


def setup_case(case: Case, dataset: OfflineDataset, dataset_path: str) -> None:
    t0 = time.perf_counter()
    try:
        if case.pretrain_cfg is not None:
            case.flops = pretrain_step_flops(dataset, case)
            run_pretrain(dataset, case, 5)  # warm-up, and compilation when asked
            case.overhead_cpu_s = min(run_pretrain(dataset, case, 1).cpu_s for _ in range(2))
        else:
            with compiled_losses(case.compile):
                case.step = build_step(case.name, dataset, dataset_path, case.bf16,
                                       small_train_config(dataset_path, case.held_out))
                case.flops = count_flops(case.step)
                for _ in range(5):
                    case.step()
    except Exception as exc:  # noqa: BLE001 - a variant that does not run is a result too (dtype mismatch)
        case.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    case.setup_s = time.perf_counter() - t0


def measure_case(case: Case, dataset: OfflineDataset, seconds: float) -> Rate:
    if case.pretrain_cfg is not None:
        last = case.rounds[-1]["updates_per_s"] if case.rounds else run_pretrain(dataset, case, 10).per_s
        rate = run_pretrain(dataset, case, max(10, int(last * seconds)))
        rate.cpu_s = max(rate.cpu_s - case.overhead_cpu_s, 1e-9)
        return rate
    assert case.step is not None
    with compiled_losses(case.compile):
        return time_loop(case.step, seconds)


def sampling_cost(dataset: OfflineDataset, seconds: float) -> dict:
    """Microseconds to draw one batch of 256: the per-update Python/indexing overhead outside the networks."""
    buffer = ReplayBuffer.from_tensors(dataset.tensors())
    generator = torch.Generator().manual_seed(0)
    single = time_loop(lambda: buffer.sample(256, generator), seconds)
    mixed = time_loop(lambda: mixed_batch(buffer, buffer, 256, 0.5, generator), seconds)
    return {"offline_sample_us": round(1e6 / single.per_s, 1), "mixed_batch_us": round(1e6 / mixed.per_s, 1)}


# -- d3rlpy ----------------------------------------------------------------------------------------------
def d3rlpy_round(dataset_path: Path, seconds: float, threads: int) -> dict:
    """One measurement window of d3rlpy's IQL in its own venv (process start-up not counted)."""
    if not D3RLPY_PYTHON.exists():
        return {"error": f"{D3RLPY_PYTHON} missing: create it as BENCHMARKS.md says"}
    cmd = [str(D3RLPY_PYTHON), str(HERE / "d3rlpy_iql.py"), "--dataset", str(dataset_path),
           "--seconds", str(seconds), "--threads", str(threads)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- several seeds ---------------------------------------------------------------------------------------
def seeds_worker(dataset_path: Path, width: int, steps: int, seeds: list[int], threads: int) -> None:
    """Child process: pretrain the given seeds one after another; print wall-clock start/end as JSON."""
    torch.set_num_threads(threads)
    dataset = OfflineDataset.load(dataset_path)
    cfg = pretrain_cfg(width, steps)
    pretrain(dataset, cfg.model_copy(update={"steps": 3}), seed=99)  # warm-up outside the window
    start = time.time()
    loop_s = 0.0
    for seed in seeds:
        _, info = pretrain(dataset, cfg, seed=seed)
        loop_s += info["seconds"]
    print(json.dumps({"start": start, "end": time.time(), "updates": steps * len(seeds), "loop_s": loop_s}))


def seeds_config(dataset_path: Path, width: int, steps: int, groups: list[list[int]], threads: int) -> dict:
    """Run one worker process per seed group concurrently; aggregate = all updates / makespan."""
    cmd = [sys.executable, __file__, "--dataset", str(dataset_path), "--seeds-width", str(width)]
    procs = [subprocess.Popen([*cmd, "--worker-seeds", ",".join(map(str, g)), "--worker-steps", str(steps),
                               "--threads", str(threads)], stdout=subprocess.PIPE, text=True) for g in groups]
    reports = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    makespan = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    updates = sum(r["updates"] for r in reports)
    return {"processes": len(groups), "threads_each": threads, "seed_groups": groups, "updates_per_seed": steps,
            "makespan_s": round(makespan, 2), "aggregate_updates_per_s": round(updates / makespan, 2),
            "per_process_updates_per_s": [round(r["updates"] / r["loop_s"], 2) for r in reports]}


def measure_seeds(dataset_path: Path, width: int, one_seed_rate: float, seconds: float) -> dict:
    steps = max(20, int(one_seed_rate * seconds))
    seeds = list(range(SEEDS))
    out = {"workload": f"pretrain step, CVAE {width}x{width}, fp32", "updates_per_seed": steps}
    out["one_seed_2_threads"] = seeds_config(dataset_path, width, steps, [[0]], 2)
    out["one_seed_1_thread"] = seeds_config(dataset_path, width, steps, [[0]], 1)
    out["5_seeds_sequential_2_threads"] = seeds_config(dataset_path, width, steps, [seeds], 2)
    out["5_seeds_2_processes_1_thread"] = seeds_config(dataset_path, width, steps, [seeds[0::2], seeds[1::2]], 1)
    out["5_seeds_5_processes_1_thread"] = seeds_config(dataset_path, width, steps, [[s] for s in seeds], 1)
    return out


# -- OpenMP wait policy ----------------------------------------------------------------------------------
def case_worker(dataset_path: Path, name: str, seconds: float) -> None:
    """Child process: one fp32 `name` case for `seconds`; prints its rate as JSON (start-up not counted)."""
    dataset = OfflineDataset.load(dataset_path)
    step = build_step(name, dataset, str(dataset_path), bf16=False)
    for _ in range(5):
        step()
    print(json.dumps(time_loop(step, seconds).as_dict()))


OMP_CONFIGS = {"2 threads, libgomp default": (2, None), "2 threads, OMP_WAIT_POLICY=PASSIVE": (2, "PASSIVE"),
               "1 thread, libgomp default": (1, None), "1 thread, OMP_WAIT_POLICY=PASSIVE": (1, "PASSIVE")}


def measure_omp(dataset_path: Path, seconds: float, rounds: int) -> dict:
    """IQL fp32 updates/s per thread count and OpenMP wait policy, each in a fresh process.

    Why: libgomp reads OMP_WAIT_POLICY once at start-up, so it can only be compared across processes. On a
    2-core machine already running other work, 2-thread torch spends its time in OpenMP barriers waiting for
    a descheduled partner thread; a passive wait policy hands the core back instead of spinning.
    """
    out: dict[str, dict] = {name: {"rounds": []} for name in OMP_CONFIGS}
    for _ in range(rounds):
        for name, (threads, policy) in OMP_CONFIGS.items():
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            cmd = [sys.executable, __file__, "--dataset", str(dataset_path), "--worker-case", "iql",
                   "--threads", str(threads), "--seconds", str(seconds)]
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
            out[name]["rounds"].append(json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0
                                       else {"error": proc.stderr.strip().splitlines()[-1][:300]})
    for value in out.values():
        rates = [r["updates_per_s"] for r in value["rounds"] if "updates_per_s" in r]
        value["updates_per_s"] = round(statistics.median(rates), 2) if rates else None
    return out


# -- main ------------------------------------------------------------------------------------------------
def resolve_dataset(path: str | None) -> Path:
    """--dataset, else the generated hopper-medium, else a small random one (throughput ignores quality)."""
    from spaars_robot.data.locate import resolve_dataset as locate
    from spaars_robot.errors import SpaarsError

    try:
        return locate(path or "hopper-medium")
    except SpaarsError as exc:
        if path:
            raise SystemExit(f"--dataset {path}: {exc}") from exc
    fallback = FALLBACK_ROOT / FALLBACK_ID
    if not (fallback / "data" / "main_data.hdf5").exists():
        subprocess.run(["spaars-robot", "data", "collect", "--task", "hopper", "--quality", "random", "--steps",
                        "20000", "--root", str(FALLBACK_ROOT), "--threads", "1"], check=True,
                       env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    return fallback


def median_or_nan(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(case: Case, peaks: dict, cpu_peaks: dict, cases: list[Case]) -> dict:
    """Medians over rounds, per wall second and per CPU-second, and the paired ratio to fp32 in each round."""
    median = median_or_nan([r["updates_per_s"] for r in case.rounds])
    per_cpu = median_or_nan([r["updates"] / r["cpu_s"] for r in case.rounds])
    fp32 = next(c for c in cases if c.name == case.name and c.variant == "fp32")
    paired = [r["updates_per_s"] / b["updates_per_s"] for r, b in zip(case.rounds, fp32.rounds)]
    dtype = "bf16" if case.bf16 else "fp32"
    gflops, gflops_cpu = case.flops * median / 1e9, case.flops * per_cpu / 1e9
    return {"case": case.name, "variant": case.variant, "error": case.error, "setup_s": round(case.setup_s, 1),
            "flops_per_update": case.flops, "updates_per_s": round(median, 2), "gflops": round(gflops, 1),
            "updates_per_cpu_s": round(per_cpu, 2), "gflops_per_cpu_s": round(gflops_cpu, 1),
            "peak_gflops": peaks[dtype], "fraction_of_peak": round(gflops / peaks[dtype], 3),
            "peak_gflops_per_cpu_s": cpu_peaks[dtype], "fraction_of_peak_per_cpu_s":
                round(gflops_cpu / cpu_peaks[dtype], 3),
            "speedup_vs_fp32_paired_median": round(median_or_nan(paired), 3), "speedup_vs_fp32_paired": [
                round(x, 3) for x in paired], "rounds": case.rounds}


def print_table(rows: list[dict], d3: dict | None) -> None:
    print(f"\n{'case':<18}{'variant':<14}{'MFLOP/upd':>10}{'upd/s':>8}{'GFLOP/s':>8}{'of peak':>8}"
          f"{'upd/cpu-s':>10}{'GF/cpu-s':>9}{'of peak':>8}{'x fp32':>8}  rounds (upd/s)")
    for r in rows:
        if r["error"]:
            print(f"{r['case']:<18}{r['variant']:<14}  error: {r['error'][:80]}")
            continue
        per_round = " ".join(f"{x['updates_per_s']:.0f}" for x in r["rounds"])
        print(f"{r['case']:<18}{r['variant']:<14}{r['flops_per_update'] / 1e6:>10.1f}{r['updates_per_s']:>8.1f}"
              f"{r['gflops']:>8.1f}{r['fraction_of_peak']:>8.1%}{r['updates_per_cpu_s']:>10.1f}"
              f"{r['gflops_per_cpu_s']:>9.1f}{r['fraction_of_peak_per_cpu_s']:>8.1%}"
              f"{r['speedup_vs_fp32_paired_median']:>8.2f}  {per_round}")
    if d3:
        print(f"{'d3rlpy IQL':<18}{'fp32':<14}{d3.get('flops_per_update', 0) / 1e6:>10.1f}"
              f"{d3.get('updates_per_s', float('nan')):>8.1f}{'':>16}{d3.get('updates_per_cpu_s', float('nan')):>10.1f}"
              f"{'':>25}  {d3.get('error') or ''}  ours/d3rlpy paired {d3.get('ours_over_d3rlpy_paired_median')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="Minari-layout dataset dir (default: datasets/spaars/hopper-medium-v0,"
                        " else a 20k-step random hopper set generated under /tmp/bench_ds)")
    parser.add_argument("--seconds", type=float, default=10.0, help="wall seconds per measurement window")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the median is reported")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--cases", help="comma-separated case names to measure (default: all), e.g. "
                                        "spaars_latent,spaars_gated")
    parser.add_argument("--no-seeds", action="store_true", help="skip the several-seeds comparison")
    parser.add_argument("--no-d3rlpy", action="store_true", help="skip d3rlpy's IQL")
    parser.add_argument("--seeds-width", type=int, default=256, help="CVAE width of the several-seeds workload")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-omp", action="store_true", help="skip the OpenMP wait-policy comparison")
    parser.add_argument("--worker-case", help=argparse.SUPPRESS)
    parser.add_argument("--worker-seeds", help=argparse.SUPPRESS)
    parser.add_argument("--worker-steps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    dataset_path = resolve_dataset(args.dataset)
    if args.worker_case is not None:
        torch.set_num_threads(args.threads)
        case_worker(dataset_path, args.worker_case, args.seconds)
        return
    if args.worker_seeds is not None:
        seeds_worker(dataset_path, args.seeds_width, args.worker_steps, [int(s) for s in args.worker_seeds.split(",")],
                     args.threads)
        return
    torch.set_num_threads(args.threads)
    dataset = OfflineDataset.load(dataset_path)
    report: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine_info(),
                    "load_start": load_average(), "dataset": str(dataset_path), "transitions": len(dataset),
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: libgomp default)"),
                    "seconds_per_window": args.seconds, "rounds": args.rounds, "threads": args.threads,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print(f"dataset {dataset_path} ({len(dataset)} transitions); load {report['load_start']['loadavg']}")
    cases = make_cases(args)
    for case in cases:
        setup_case(case, dataset, str(dataset_path))
        print(f"  set up {case.name} {case.variant}: {case.flops / 1e6:.1f} MFLOP/update, {case.setup_s:.1f} s"
              + (f"  ERROR {case.error}" if case.error else ""), flush=True)
    report["batch_sampling"] = sampling_cost(dataset, min(args.seconds, 2.0))
    print(f"  batch sampling: {report['batch_sampling']}")
    peak_rounds: dict[str, list[dict]] = {"fp32": [], "bf16": []}
    d3_rounds: list[dict] = []
    for r in range(args.rounds):
        for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            peak_rounds[dtype_name].append(matmul_peak(dtype, args.seconds / 2))
        for case in cases:
            if case.error is None:
                case.rounds.append(measure_case(case, dataset, args.seconds).as_dict())
            if case.name == "iql" and case.variant == "fp32" and not args.no_d3rlpy:
                d3_rounds.append(d3rlpy_round(dataset_path, args.seconds, args.threads))
        print(f"round {r + 1}/{args.rounds} done; load {os.getloadavg()[0]:.2f}", flush=True)
    peaks = {k: max(max(x for n, x in p.items() if "cpu" not in n) for p in v) for k, v in peak_rounds.items()}
    cpu_peaks = {k: max(max(x for n, x in p.items() if "cpu" in n) for p in v) for k, v in peak_rounds.items()}
    report["matmul_peak_gflops"] = {"best_wall": peaks, "best_per_cpu_s": cpu_peaks, "rounds": peak_rounds}
    report["cases"] = [summarise(c, peaks, cpu_peaks, cases) for c in cases]
    d3 = None
    if not args.no_d3rlpy:
        ok = [x for x in d3_rounds if "error" not in x]
        d3 = dict(ok[0]) if ok else dict(d3_rounds[0])
        ours = next(c for c in report["cases"] if c["case"] == "iql" and c["variant"] == "fp32")
        if ok:
            d3["updates_per_s"] = round(statistics.median(x["updates_per_s"] for x in ok), 2)
            d3["updates_per_cpu_s"] = round(statistics.median(x["updates"] / x["cpu_s"] for x in ok), 2)
            d3["gflops"] = round(d3["flops_per_update"] * d3["updates_per_s"] / 1e9, 1)
            paired = [o["updates_per_s"] / x["updates_per_s"] for o, x in zip(ours["rounds"], d3_rounds) if x in ok]
            d3["ours_over_d3rlpy_paired"] = [round(x, 3) for x in paired]
            d3["ours_over_d3rlpy_paired_median"] = round(statistics.median(paired), 3)
            d3["ours_over_d3rlpy_per_cpu_s"] = round(ours["updates_per_cpu_s"] / d3["updates_per_cpu_s"], 3)
        d3["rounds"] = d3_rounds
        report["d3rlpy_iql"] = d3
    print(f"\nmatmul peak GFLOP/s (2 threads): {peak_rounds}")
    print_table(report["cases"], d3)
    if not args.no_seeds:
        base = next(c for c in report["cases"] if c["case"] == f"pretrain_cvae{args.seeds_width}"
                    and c["variant"] == "fp32")
        report["seeds"] = measure_seeds(dataset_path, args.seeds_width, base["updates_per_s"], args.seconds)
        print("\nseveral seeds (aggregate updates/s):")
        for key, value in report["seeds"].items():
            if isinstance(value, dict):
                print(f"  {key:<32}{value['aggregate_updates_per_s']:>9.1f}   makespan {value['makespan_s']} s")
    if not args.no_omp:
        report["omp_wait_policy_iql_fp32"] = measure_omp(dataset_path, args.seconds, args.rounds)
        print("\nIQL fp32 updates/s by threads and OpenMP wait policy (fresh process each):")
        for key, value in report["omp_wait_policy_iql_fp32"].items():
            print(f"  {key:<40}{value['updates_per_s']}")
    report["load_end"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nload at end {report['load_end']['loadavg']}; wrote {args.out}")


if __name__ == "__main__":
    main()
