"""What a safety spec costs a policy: the bundle's score in simulation under spec variants, side by side.

    MUJOCO_GL=egl .venv/bin/python benchmarks/safety_cost.py                       # shipped bundle, 10 episodes
    MUJOCO_GL=egl .venv/bin/python benchmarks/safety_cost.py --episodes 20 \\
        --variant 'rate1.8={"rate_limit": 1.8, "soft_zone": 0.0, "margin": 0.0}'

Every variant runs the real server request path (`ActionServer.handle`: decode, onnxruntime, gate,
support monitor, safety layer, encode) without sockets, under the controller's watchdog on simulated
time (`run_sim(realtime=False)`), on the same episode seeds, so the only difference between two rows is
the safety spec. A variant overrides fields of the spec's `action` section; `none` serves with no
safety layer at all (the policy as trained); `--spec NAME=PATH` adds a whole spec file as a row (a different
device, e.g. joint position limits instead of the torque soft zone). Episode seeds start at --seed (default 100: not the
training-evaluation seeds). Results: mean and 95 % t-interval over episodes, limit counts, JSON.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from spaars_robot.config.tasks import load_task
from spaars_robot.export.bundle import load_bundle
from spaars_robot.export.safety_binding import bind_spec
from spaars_robot.runtime import protocol as p
from spaars_robot.runtime.server import ActionServer
from spaars_robot.runtime.sim_client import run_sim
from spaars_robot.safety.limits import SafetyLayer
from spaars_robot.safety.spec import SafetySpec, load_safety_spec
from spaars_robot.train.summaries import mean_ci95

DEFAULT_VARIANTS = {
    "shipped": {},
    "no soft zone": {"soft_zone": 0.0},
    "no margin, no soft zone": {"soft_zone": 0.0, "margin": 0.0},
    "no rate limit": {"rate_limit": None},
}


class InProcessServer:
    """The Client interface `run_sim` drives, answered by `ActionServer.handle` directly (no sockets)."""

    def __init__(self, server: ActionServer) -> None:
        self.server = server
        self.handshakes = 0
        self._seq = 0
        self.stale_replies = 0

    def _call(self, msg: p.Message) -> p.Message:
        frame, _ = self.server.handle(b"local", p.encode(msg), time.perf_counter())
        reply = p.decode(frame)
        if isinstance(reply, p.ErrorReply):
            raise p.ServerError(reply.code, reply.message)
        return reply

    def connect(self, timeout_s: float = 1.0) -> p.Message:
        welcome = self._call(p.Hello(schema=self.server.schema))
        self.handshakes += 1
        return welcome

    def forget_session(self) -> None:
        self.connect()

    def reset(self, timeout_s: float | None = None) -> None:
        self._seq += 1
        self._call(p.Reset(self._seq))

    def act(self, obs: np.ndarray, timeout_s: float | None = None,
            watchdog: p.WatchdogReport | None = None, outcome: p.Outcome | None = None) -> p.ActionReply:
        self._seq += 1
        reply = self._call(p.Act(self._seq, np.asarray(obs, dtype=np.float32), watchdog, outcome))
        assert isinstance(reply, p.ActionReply)
        return reply


def with_overrides(spec: SafetySpec, overrides: dict) -> SafetySpec:
    """A copy of `spec` with fields of its action section replaced, validated like a YAML file would be."""
    action = spec.action.model_dump() | overrides
    return SafetySpec.model_validate(spec.model_dump() | {"action": action})


def evaluate(bundle, spec: SafetySpec | None, episodes: int, seed: int) -> dict:
    m = bundle.manifest
    layer = None if spec is None else SafetyLayer(spec, m.action.dim, m.observation.dim)
    task = load_task(m.task)
    with ActionServer(bundle, ["tcp://127.0.0.1:*"], safety=layer) as server:
        summary = run_sim(InProcessServer(server), task, episodes, seed, realtime=False, timeout_s=1.0)
    scores = [e.normalized_score for e in summary.episodes]
    mean, ci = mean_ci95(scores)
    return {"normalized_mean": mean, "normalized_ci95": ci, "episodes": scores, "steps": summary.steps,
            "limit_counts": summary.limit_counts, "source_share": summary.source_share,
            "spec_action": None if spec is None else spec.action.model_dump()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="policies/hopper-default")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--variant", action="append", default=[],
                        help='NAME={"field": value, ...} overriding the spec\'s action section; repeatable '
                             "(default: shipped, no soft zone, no margin and no soft zone, no rate limit)")
    parser.add_argument("--spec", action="append", default=[], metavar="NAME=PATH",
                        help="a whole spec file as one more row (e.g. 'joint limits=safety/hopper-joint-limits.yaml'); "
                             "repeatable")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "safety_cost.json")
    args = parser.parse_args()

    bundle = load_bundle(args.bundle)
    base = bind_spec(bundle.manifest, None).spec
    variants = dict(DEFAULT_VARIANTS)
    if args.variant:
        variants = {"shipped": {}}
        for item in args.variant:
            name, _, body = item.partition("=")
            variants[name] = json.loads(body)
    results: dict = {"command": "benchmarks/safety_cost.py " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items() if k not in ("out", "variant", "spec")),
        "spec_files": args.spec,
        "bundle": str(args.bundle), "bundle_sha256": bundle.sha256, "episode_seeds": [args.seed, args.seed + args.episodes - 1],
        "rows": {}}
    rows = {"none (no safety layer)": None} | {name: with_overrides(base, o) for name, o in variants.items()}
    for item in args.spec:
        name, _, path = item.partition("=")
        rows[name] = load_safety_spec(Path(path))
    baseline = None
    for name, spec in rows.items():
        row = evaluate(bundle, spec, args.episodes, args.seed)
        baseline = row["normalized_mean"] if baseline is None else baseline
        row["vs_no_safety"] = row["normalized_mean"] - baseline
        results["rows"][name] = row
        acted = {k: v for k, v in row["limit_counts"].items() if v}
        print(f"{name:28s} normalised {row['normalized_mean']:6.1f} +- {row['normalized_ci95']:5.1f}  "
              f"({row['vs_no_safety']:+6.1f} vs no safety)  limits {acted}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
