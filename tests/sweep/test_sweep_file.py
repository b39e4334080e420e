"""The sweep file: malformed files are one clear line; the committed grid's sweep finds every committed summary."""
from __future__ import annotations

import csv
import json

import pytest
from rich.console import Console

from spaars_robot.errors import SpaarsError
from spaars_robot.sweep.spec import load_sweep
from spaars_robot.sweep.trials import Status, plan_trials
from spaars_robot.sweep.view import SweepView, read_state
from tests.conftest import REPO, run_cli

GOOD = "protocol: smoke\ntasks: [hopper]\nalgos: [iql]\nseeds: [0, 1]\n"


def _plan(tmp_path, text: str):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    sweep, grids = load_sweep(path)
    return plan_trials(sweep, grids, path)


@pytest.mark.parametrize("text,expected", [
    (GOOD.replace("[hopper]", "[hoper]"), "unknown task 'hoper'"),
    (GOOD.replace("[iql]", "[iqll]"), "algos.0: Input should be 'spaars'"),
    (GOOD.replace("[0, 1]", "[0, 0]"), "seeds must be distinct"),
    (GOOD.replace("[0, 1]", "[0, -1]"), "seeds must be >= 0"),
    (GOOD.replace("[0, 1]", "[0, x]"), "seeds.1: Input should be a valid integer"),
    (GOOD + "seed: [2]\n", "seed: Extra inputs are not permitted"),
    (GOOD.replace("algos: [iql]\n", ""), "no algos"),
    (GOOD + "variants: {kappa: [online.gate.kappa=-1]}\n", "online.gate.kappa"),
    (GOOD + "ablations: [hard]\n", "ablations.0: Input should be 'none'"),
    ("grids:\n  - tasks: [hopper]\n    algos: [spaars]\n    seeds: [0]\n    protocol: nope\n", "grids[0]"),
])
def test_malformed_sweep_files_are_one_line_errors(tmp_path, text, expected):
    with pytest.raises(SpaarsError) as info:
        _plan(tmp_path, text)
    message = str(info.value)
    assert expected in message and "\n" not in message and str(tmp_path / "sweep.yaml") in message


def test_trials_are_the_cross_product_named_as_train_names_them(tmp_path):
    trials = _plan(tmp_path, "protocol: smoke\nsafety_spec: none\nruns_root: r\ngrids:\n"
                   "  - {tasks: [hopper, walker2d], algos: [spaars, iql], seeds: [0, 1]}\n"
                   "  - {tasks: [hopper], algos: [spaars], ablations: [no-concurrent-bc+hard-switch], seeds: [3],\n"
                   "     variants: {k2: [online.gate.kappa=2]}, safety_spec: default}\n")
    assert len(trials) == 2 * 2 * 2 + 1
    assert trials[0].name == "hopper_spaars_smoke_seed0" and trials[0].dataset == "hopper-medium"
    last = trials[-1]
    assert last.name.startswith("hopper_spaars-no-concurrent-bc-hard-switch-safe-set-") and last.seed == 3
    assert last.run_dir.parent.name == last.name.split("_")[1].join(["hopper-", "-smoke"])
    args = last.train_args()
    assert "--no-concurrent-bc" in args and "--hard-switch" in args and "--safety-spec" not in args
    assert args[args.index("--set") + 1] == "online.gate.kappa=2"
    assert all(t.status() is Status.new for t in trials)


def test_a_trial_on_another_dataset_or_in_bf16_is_planned_under_the_names_train_writes(tmp_path):
    """The sweep decides 'done' by the summary's file name, so it must name a trial exactly as `train` will: a second
    dataset of a task ('-on-medium-replay') and bf16 ('-bf16') are part of the name; the device is not."""
    from spaars_robot.train.jobs import plan_new
    from spaars_robot.train.summaries import summary_name

    trials = _plan(tmp_path, "protocol: smoke\nsafety_spec: none\nruns_root: r\ntasks: [hopper]\nalgos: [spar]\n"
                   "seeds: [0]\ndatasets: {hopper: hopper-medium-replay}\nprecision: bf16\ndevice: cpu\n")
    (trial,) = trials
    assert trial.name == "hopper_spar-bf16-on-medium-replay_smoke_seed0"
    (job,) = plan_new("hopper", "hopper-medium-replay", None, "spar", [0], "smoke", [], [], trial.runs_root, None,
                      trial.runs_root / "_pretrain_cache", True, "none")
    assert trial.run_dir == job.run_dir
    written = {"task": "hopper", "algo": "spar", "protocol": "smoke", "seed": 0, "bf16": True, "tag": "",
               "variant": {"concurrent_bc": True, "hard_switch": False}, "safety_spec": None,
               "dataset": "datasets/spaars/hopper-medium-replay-v0"}  # as the runner records it: the path
    assert trial.summary_path.name == summary_name(written)
    args = trial.train_args()
    assert args[args.index("--precision") + 1] == "bf16" and args[args.index("--device") + 1] == "cpu"
    plain = _plan(tmp_path, GOOD)[0].train_args()
    assert "--precision" not in plain and "--device" not in plain
    with pytest.raises(SpaarsError, match="precision"):
        _plan(tmp_path, GOOD + "precision: auto\n")


def test_committed_short_grid_sweep_finds_every_committed_summary():
    """benchmarks/sweeps/short_grid.yaml names exactly the committed grid's summaries: its dry run says all done."""
    proc = run_cli("sweep", "benchmarks/sweeps/short_grid.yaml", "--dry-run", cwd=REPO)
    assert "46 trials: 46 done, 0 to resume, 0 new" in proc.stdout, proc.stdout
    results = REPO / "benchmarks" / "results" / "train"
    listed = {line.split()[1] for line in proc.stdout.splitlines()[1:]}
    assert len(listed) == 46 and listed <= {p.stem for p in results.glob("*.json")}
    assert {f"{task}_{algo}_short_seed{seed}" for task in ("hopper", "walker2d")
            for algo in ("spaars", "iql", "latent", "raw") for seed in range(5)} <= listed


def test_live_view_reads_trial_state_from_the_run_directory(tmp_path):
    (trial,) = _plan(tmp_path, GOOD.replace("[0, 1]", "[0]") + f"runs_root: {tmp_path / 'runs'}\n")
    assert read_state(trial, running=False).phase == "waiting"
    trial.run_dir.mkdir(parents=True)
    (trial.run_dir / "train.log").write_text("12:00:00 pretrain step 50/200 (25 updates/s) iql/q=1\n")
    state = read_state(trial, running=True)
    assert (state.phase, state.step, state.total, state.eta_seconds) == ("pretrain", 50, 200, 6.0)
    with open(trial.run_dir / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["step", "phase", "normalized_mean", "env_steps_per_second"])
        writer.writeheader()
        writer.writerow({"step": 200, "phase": "iql", "normalized_mean": 12.5, "env_steps_per_second": 40.0})
    state = read_state(trial, running=True)
    assert (state.phase, state.step, state.total, state.score, state.eta_seconds) == ("iql", 200, 600, 12.5, 10.0)
    console = Console(record=True, width=120)
    table = SweepView([trial], console, live=False).table({trial.name: state})
    console.print(table)
    text = console.export_text()
    assert "hopper_iql-safe_smoke_seed0" in text and "200/600" in text and "12.5" in text and "0m10s" in text
    trial.summary_path.parent.mkdir(parents=True)
    trial.summary_path.write_text(json.dumps({"final_normalized": 1.0}))
    assert read_state(trial, running=False).phase == "done"


def test_sweep_cli_refuses_a_bad_file_in_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD + "seeds_extra: 1\n")
    proc = run_cli("sweep", str(path), "--dry-run", check=False)
    assert proc.returncode == 2 and "seeds_extra: Extra inputs are not permitted" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1



def test_a_missing_dataset_is_refused_before_any_trial_starts(tmp_path):
    from spaars_robot.commands.sweep import _check_datasets

    trials = _plan(tmp_path, GOOD + f"datasets: {{hopper: {tmp_path / 'nowhere'}}}\n")
    with pytest.raises(SpaarsError, match=r"nowhere not found .*data collect --task hopper"):
        _check_datasets(trials)


@pytest.mark.parametrize("sweep", sorted(p.name for p in (REPO / "benchmarks" / "sweeps").glob("*.yaml")))
def test_every_committed_sweep_plans_and_calls_done_only_what_is_committed(sweep):
    """Each grid the benchmarks name is one command: it plans, and a trial it calls done has its summary committed
    in the sweep's results_dir (so the offline tables' 30 hopper trials are found, not rerun)."""
    import yaml

    proc = run_cli("sweep", f"benchmarks/sweeps/{sweep}", "--dry-run", cwd=REPO)
    results = REPO / yaml.safe_load((REPO / "benchmarks" / "sweeps" / sweep).read_text())["results_dir"]
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    assert rows and all(state in ("done", "resume", "new") for state, *_ in rows), proc.stdout
    for state, name, *_ in rows:
        assert (state == "done") == (results / f"{name}.json").exists(), name
    if sweep == "spar_offline.yaml":
        done = {name for state, name, *_ in rows if state == "done"}
        assert {f"hopper_{algo}{on}_offline_seed{seed}" for algo in ("spar", "bc", "iql")
                for on in ("", "-on-medium-replay") for seed in range(5)} <= done
