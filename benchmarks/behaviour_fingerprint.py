"""Fingerprint what the code computes, so a refactor can be shown to change nothing (issue 15).

Runs the real CLI end to end on the `smoke` protocol: a tiny collected Hopper dataset, every algorithm
(spaars, iql, latent, raw, sac, and spaars with both ablations), then exports the spaars run and evaluates
the bundle with onnxruntime on fixed observations. Writes SHA-256s of every evaluation curve (metrics.csv
without its wall-clock columns), of every final network state and of the bundle's outputs.

    MUJOCO_GL=egl .venv/bin/python benchmarks/behaviour_fingerprint.py --out /tmp/fp_after.json
    python benchmarks/behaviour_fingerprint.py --compare benchmarks/results/fingerprint_before.json /tmp/fp_after.json

Two fingerprints are equal only if every curve and every output is bit-identical.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WALL_COLUMNS = {"wall_seconds", "env_steps_per_second"}
RUNS = [("spaars", []), ("iql", []), ("latent", []), ("raw", []), ("sac", []),
        ("spaars", ["--no-concurrent-bc", "--hard-switch"])]


def cli(*args: str, env: dict) -> None:
    proc = subprocess.run([sys.executable, "-m", "spaars_robot.cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"spaars-robot {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def curve_digest(metrics_csv: Path) -> tuple[str, list[dict]]:
    with open(metrics_csv) as fh:
        rows = [{k: v for k, v in row.items() if k not in WALL_COLUMNS} for row in csv.DictReader(fh)]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest(), rows


def tensor_digest(tree) -> str:
    """SHA-256 over every tensor in a (nested) state dict, in key order."""
    import torch

    digest = hashlib.sha256()

    def visit(prefix: str, node) -> None:
        if isinstance(node, dict):
            for key in sorted(node, key=str):
                visit(f"{prefix}.{key}", node[key])
        elif isinstance(node, torch.Tensor):
            digest.update(prefix.encode())
            digest.update(node.detach().contiguous().cpu().numpy().tobytes())

    visit("", tree)
    return digest.hexdigest()


def bundle_digest(bundle: Path) -> dict:
    import numpy as np

    from spaars_robot.export.bundle import load_bundle
    from spaars_robot.export.session import make_session

    loaded = load_bundle(bundle)
    session = make_session(loaded.path / "policy.onnx")
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((64, loaded.manifest.observation.dim)).astype(np.float32)
    outputs = session.run(None, {"obs": obs})
    names = [o.name for o in session.get_outputs()]
    return {name: hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest() for name, out in zip(names, outputs)}


def fingerprint(work: Path) -> dict:
    env = {**os.environ, "MUJOCO_GL": "egl", "SPAARS_CACHE": str(work / "cache")}
    root = work / "datasets"
    cli("data", "collect", "--task", "hopper", "--quality", "medium", "--steps", "3000", "--train-budget", "2000",
        "--eval-every", "1000", "--random-steps", "500", "--threads", "1", "--root", str(root), env=env)
    dataset = root / "spaars" / "hopper-medium-v0"
    meta = json.loads((dataset / "data" / "metadata.json").read_text())
    out: dict = {"dataset_sha256": meta["spaars_checksums"]["main_data.hdf5"], "runs": {}}
    import torch

    for algo, flags in RUNS:
        runs = work / f"runs-{algo}{''.join(flags)}"
        cli("train", "--task", "hopper", "--dataset", str(dataset), "--algo", algo, "--protocol", "smoke",
            "--runs-root", str(runs), "--results-dir", str(work / "results"), *flags, env=env)
        (run_dir,) = [p.parent for p in runs.glob("*/seed0/metrics.csv")]
        digest, rows = curve_digest(run_dir / "metrics.csv")
        state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
        agent_state = state["agent"]
        if "sac" in agent_state:  # SAC's state before it implemented the agent contract itself: same tensors
            agent_state = agent_state["sac"]
        key = " ".join([algo, *flags])
        out["runs"][key] = {"curve_sha256": digest, "networks_sha256": tensor_digest(agent_state),
                            "normalized": [r["normalized_mean"] for r in rows], "phases": [r["phase"] for r in rows]}
        if key == "spaars":
            spaars_run = run_dir
    bundle = work / "bundle"
    cli("export", str(spaars_run), "--onnx", "--out", str(bundle), env=env)
    out["bundle_outputs_sha256"] = bundle_digest(bundle)
    return out


def compare(a: dict, b: dict) -> list[str]:
    diffs = []
    if a["dataset_sha256"] != b["dataset_sha256"]:
        diffs.append("dataset differs")
    for key in sorted(set(a["runs"]) | set(b["runs"])):
        ra, rb = a["runs"].get(key), b["runs"].get(key)
        if ra is None or rb is None:
            diffs.append(f"{key}: missing in one fingerprint")
            continue
        for field in ("curve_sha256", "networks_sha256"):
            if ra[field] != rb[field]:
                diffs.append(f"{key}: {field} differs")
    if a["bundle_outputs_sha256"] != b["bundle_outputs_sha256"]:
        diffs.append("bundle outputs differ")
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the fingerprint JSON here")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        a, b = (json.loads(p.read_text()) for p in args.compare)
        diffs = compare(a, b)
        n = len(a["runs"])
        print("bit-identical: dataset, "
              f"{n} smoke curves and final networks, bundle outputs" if not diffs else "\n".join(diffs))
        raise SystemExit(1 if diffs else 0)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="spaars-fp-") as tmp:
        result = fingerprint(Path(tmp))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
