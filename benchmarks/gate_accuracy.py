"""Ground truth for the advantage gate: does it open where the raw action is really better? (issue 16)

From simulator states saved along real trajectories of the run's deployed policy, each state is branched
twice: execute the raw action mu_raw(s) or the decoded latent action D(s, mu_z(s)), then follow the same
deployed policy for H steps with Gaussian action noise drawn from the same generator in both branches
(common random numbers), for several repeats. The paired difference of discounted H-step returns is the
true advantage of raw over latent at that state; where it is significant, the gate's decision is scored
against its sign. Significant means a paired two-sided t-test over the repeats rejects "no difference" at
`--alpha` (5 %); under the null a share alpha of the states is significant by chance (with 4 repeats the old 2-standard-error rule let ~14 % through), so the report gives that expected count and a
Wilson 95 % interval for every accuracy: an accuracy over a significant set no bigger than chance's is noise.

    MUJOCO_GL=egl .venv/bin/python benchmarks/gate_accuracy.py runs/hopper-spaars-short/seed0 \
        --states 300 --horizon 100 --repeats 16 --out benchmarks/results/gate_accuracy_hopper.json

Reports `sign_accuracy` (the gate's entry test, LCB > tau x scale, at each state vs the true sign, significant
states only) with its interval, the same for the ensemble's mean advantage and for each member, how often the gate
opens, the cost, and per state (`per_state`) the true difference, its standard error, p-value and the critic's
advantages, so other gate forms can be scored on the same ground truth without new rollouts. `deployed_*` score what
the gate executed at each state as it was collected, its hysteresis latch included: for a gate that latches open
(the default `scale: q`) the two differ, and the deployed one is what the robot gets. `--add-deployed JSON` adds
those to a result written before they were kept (the states are collected again and checked against it), and
`--add-rollout-gate JSON` scores the run's fitted rollout gate (`spaars-robot gate fit`) on the same states and truth.

`--refit 2,10 --refit-updates 20000` also fits fresh critic ensembles of those sizes (LayerNorm, targets from the
min over a random `--refit-subset` of members, as RLPD/SUPE) on the run's own 50/50 batches (dataset and the
checkpoint's online replay) with the run's own TD target (its final policies and gate choose the next action),
and scores each the same way: whether more members rank raw against latent where the run's critic could not,
with the training budget equal across sizes (the refit of the run's own size is the control). A spec
`M:run` continues the run's own critic (M must be its size) instead of fresh weights, and `M@R` fits on batches
with a share R of the dataset (`2:run@0`: the run's critic on its online replay alone: whether the states near the
deployed policy teach the critic the local action ranking the dataset's mix blurs); `+mean` / `+sample` sets the
latent action of the TD target at s' (`online.critic_target_action`: the deployed decoded mean, or a decoded
sample of the exploring latent policy), and `/N` its n-step return (`online.critic_nstep`: rewards summed over up
to N steps of the stored episodes before the bootstrap); `*U` gives that refit U updates instead of
`--refit-updates` (`2*5000,2*15000,2*45000`: does a critic rank worse the longer it trains?). All specs of one
invocation are scored on the same states and truth.
The H-step return is a Monte-Carlo estimate with no critic bootstrap, so the ground truth never depends
on the critic it judges; with gamma = 0.99, H = 100 covers 63 % of the discount weight.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from scipy import stats

from spaars_robot.algos.gate import choose_scale, lcb_of, member_advantages
from spaars_robot.algos.rollout_gate import gate_features
from spaars_robot.config.tasks import load_task
from spaars_robot.config.training import load_run_config
from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.data.files import atomic_write_json, safe_torch_load
from spaars_robot.export.rollout_gate_file import load_rollout_gate
from spaars_robot.safety.limits import SafetyLayer
from spaars_robot.safety.spec import load_safety_spec
from spaars_robot.train.agents import build_agent
from spaars_robot.train.branching import (  # noqa: F401 (re-exported: gate_learnability.py and tests use them here)
    GATED_ALGOS,
    GateInputs,
    SavedState,
    branch_differences,
    collect_states,
    gate_inputs,
    paired_p_values,
)

DIAGNOSTIC_SEED_BASE = 3_000_000  # never a training or evaluation seed, nor `gate fit`'s


def load_agent(run_dir: Path, cache_dir: Path):
    """The run's final agent, its gate scored even for a run that never switched, and the run's safety layer (a run
    trained under a spec is judged as it runs: every executed action through that layer). Built through the
    pretraining cache, unlike `spaars-robot gate fit`'s checkpoint-only loader: refits need its offline buffer."""
    config, facts = load_run_config(run_dir)
    if config.algo not in GATED_ALGOS:
        raise SystemExit(f"{run_dir}: a {config.algo} run has no gate")
    task = load_task(config.task)
    built = build_agent(config, task, OfflineDataset.load(facts.dataset_path), cache_dir, facts.bf16, None)
    built.agent.load_state_dict(safe_torch_load(run_dir / "checkpoint.pt")["agent"])
    built.agent.phase, built.agent.force_raw = "gated", False
    layer = None if config.safety_spec is None else SafetyLayer(load_safety_spec(Path(config.safety_spec)),
                                                                 task.action_dim, task.obs_dim)
    return config, task, built, layer


def wilson_interval(hits: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """95 % interval of a proportion; honest at the small counts (tens of states) this diagnostic sees."""
    if n == 0:
        return None
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(centre - half, 4), round(centre + half, 4)


def top_half_accuracy(advantage: np.ndarray, truth: np.ndarray, significant: np.ndarray,
                      ranked_by: np.ndarray) -> float | None:
    """Sign accuracy of `advantage` on the significant states whose |ranked_by| is above its median there.

    Ranked by |advantage|: is the critic right where it is most sure? Ranked by |truth|: is it right where a wrong
    choice costs the most? A critic that only gets small differences right can score near 0.5 overall and still
    fail the states that matter, which the overall accuracy does not show.
    """
    if significant.sum() < 2:
        return None
    a, t, r = advantage[significant], truth[significant], np.abs(ranked_by[significant])
    top = r > np.median(r)
    return float(((a[top] > 0) == (t[top] > 0)).mean()) if top.any() else None


def agreement(advantage: np.ndarray, truth: np.ndarray) -> dict:
    """How the critic's advantage and the measured difference move together over every state (noise included).

    Pearson's r weighs the states where the critic is most emphatic and the truth differs most: a negative r, with
    the true difference lowest where the critic's advantage is highest, means the gate opens exactly where raw is
    worst, which sign accuracy on the significant states alone does not show (issue 16)."""
    top, bottom = advantage >= np.quantile(advantage, 0.9), advantage <= np.quantile(advantage, 0.1)
    pearson = stats.pearsonr(advantage, truth)
    return {"pearson": float(pearson.statistic), "pearson_p": float(pearson.pvalue),
            "spearman": float(stats.spearmanr(advantage, truth).statistic),
            "true_difference_where_critic_top_decile": float(truth[top].mean()),
            "true_difference_where_critic_bottom_decile": float(truth[bottom].mean())}


def sign_score(says_raw: np.ndarray, true_difference: np.ndarray,
               significant: np.ndarray) -> tuple[float | None, tuple[float, float] | None]:
    """Sign accuracy of a raw/latent decision on the significant states, and its Wilson interval (None without any).

    One scoring for every gate this diagnostic and `gate_learnability.py` report, so their figures compare."""
    right = says_raw[significant] == (true_difference[significant] > 0)
    n = int(significant.sum())
    return (float(right.mean()) if n else None), wilson_interval(int(right.sum()), n)


def deployed_scores(deployed_raw: np.ndarray, p_values: np.ndarray, true_difference: np.ndarray,
                    alpha: float) -> dict:
    """The deployed gate (entry test plus its hysteresis latch) scored on the significant states like the entry test."""
    accuracy, interval = sign_score(deployed_raw, true_difference, p_values < alpha)
    return {"deployed_gate_open_rate": float(deployed_raw.mean()),
            "deployed_sign_accuracy": accuracy, "deployed_sign_accuracy_ci95": interval}


class Recollected(NamedTuple):
    config: object
    task: object
    built: object
    layer: SafetyLayer | None
    states: list[SavedState]
    seen: GateInputs


def recollect(path: Path, result: dict, cache_dir: Path, stride: int) -> Recollected:
    """A written result's states collected again from its run, refused unless the gate sees the written LCBs there.

    The deployed policy is deterministic on the diagnostic's seeds, so the same run and code give the same states;
    anything scored against the written truth (`--add-deployed`, `gate_learnability.py`) must be on those states."""
    if "lcb" not in result.get("per_state", {}):
        raise SystemExit(f"{path}: no per-state arrays (written before they were kept); run the diagnostic again")
    config, task, built, layer = load_agent(Path(result["run"]), cache_dir)
    agent, nets = built.agent, built.nets
    states = collect_states(agent, task, int(result["states"]), stride, layer, seed_base=DIAGNOSTIC_SEED_BASE)
    seen = gate_inputs(agent, nets, states, config.online.gate.kappa)
    lcb, written = seen.lcb.numpy(), np.asarray(result["per_state"]["lcb"])
    # written rounded to 1e-6; an advantage is a difference of two float32 Q values, so allow a few of |Q|'s ulps
    # (4 x 1.2e-7 relative) in case a kernel sums in another order; another state set moves it by far more
    q_magnitude = float(agent.gate_critic(seen.obs, seen.raw).abs().max())
    if lcb.shape != written.shape:
        raise SystemExit(f"{path}: the states collected again are not the written ones ({len(lcb)} states, "
                         f"{len(written)} written); run the diagnostic again")
    if not np.allclose(lcb, written, rtol=0.0, atol=1e-6 + 5e-7 * q_magnitude):
        raise SystemExit(f"{path}: the states collected again are not the written ones (largest LCB difference "
                         f"{np.abs(lcb - written).max():.3g}); run the diagnostic again")
    return Recollected(config, task, built, layer, states, seen)


def add_deployed(path: Path, cache_dir: Path, default_stride: int) -> dict:
    """Adds the deployed gate's decisions to a result written before they were kept, without new rollouts.

    The states are collected again (the deployed policy is deterministic on the diagnostic's seeds); the gate's LCB
    at each must equal the written one, or the run or the code has changed and the result is refused, not mixed."""
    result = json.loads(path.read_text())
    stride = int(result.get("stride", default_stride))  # results written before it was kept used --stride
    deployed = recollect(path, result, cache_dir, stride).seen.deployed
    per_state = result["per_state"]
    result |= {"stride": stride, **deployed_scores(deployed, np.asarray(per_state["p_value"]),
                                                   np.asarray(per_state["true_difference"]),
                                                   float(result["significance"]["alpha"]))}
    per_state["deployed_open"] = deployed.astype(int).tolist()
    atomic_write_json(path, result)
    return {key: result[key] for key in ("deployed_gate_open_rate", "deployed_sign_accuracy",
                                         "deployed_sign_accuracy_ci95", "gate_open_rate", "sign_accuracy")}


def add_rollout_gate(path: Path, cache_dir: Path, default_stride: int) -> dict:
    """Scores the run's fitted rollout gate (`spaars-robot gate fit`, RUN/rollout_gate.pt) on a written result's
    states and truth, without new rollouts: the issue-16 sign accuracy of the gate `export --gate rollout` deploys.

    `gate fit` branches episodes of its own seed stream, so these held-out states were never fitted on. The result
    gains `rollout_gate` (sign accuracy, interval, open rate, the gate file's fit record) and per-state predictions;
    it is refused like `--add-deployed` if the states collected again are not the written ones."""
    result = json.loads(path.read_text())
    stride = int(result.get("stride", default_stride))
    again = recollect(path, result, cache_dir, stride)
    gate, record = load_rollout_gate(Path(result["run"]))
    prediction = gate(gate_features(again.seen.obs, again.seen.raw, again.seen.lat)).numpy()
    per_state = result["per_state"]
    significant = np.asarray(per_state["p_value"]) < float(result["significance"]["alpha"])
    accuracy, interval = sign_score(prediction > 0, np.asarray(per_state["true_difference"]), significant)
    result["rollout_gate"] = {"sign_accuracy": accuracy, "sign_accuracy_ci95": interval,
                              "open_rate": float((prediction > 0).mean()),
                              "spearman": float(stats.spearmanr(prediction, per_state["true_difference"]).statistic),
                              "fit": {k: record.get(k) for k in ("states", "significant_states", "choice", "k",
                                                                 "margin", "bandwidth", "cross_validated_gain")}}
    per_state["rollout_gate_prediction"] = [round(float(v), 6) for v in prediction]
    atomic_write_json(path, result)
    return {key: result["rollout_gate"][key] for key in ("sign_accuracy", "sign_accuracy_ci95", "open_rate")}


def rescore(path: Path) -> dict:
    """`agreement` of a written result's run critic (its per-state arrays), for results made before it existed."""
    per_state = json.loads(path.read_text()).get("per_state")
    if per_state is None:
        raise SystemExit(f"{path}: no per-state arrays (written before they were kept); run the diagnostic again")
    return agreement(np.asarray(per_state["critic_advantage"]), np.asarray(per_state["true_difference"]))


class RefitSpec(NamedTuple):
    members: int
    from_run: bool  # continue the run's own critic instead of fresh weights
    offline_ratio: float | None  # dataset share of each batch; None: the run's
    target_action: str | None  # the TD target's latent action; None: the run's `online.critic_target_action`
    nstep: int | None  # n of the TD target; None: the run's `online.critic_nstep`
    updates: int | None = None  # TD updates of this refit; None: --refit-updates


def parse_refit(spec: str, run_members: int) -> RefitSpec:
    """`MEMBERS[:fresh|run][@OFFLINE_RATIO][+sample|+mean][/NSTEP][*UPDATES]` -> RefitSpec."""
    spec, star, updates_text = spec.strip().partition("*")
    if star and not (updates_text.isdigit() and int(updates_text) >= 1):
        raise SystemExit(f"--refit {spec}*{updates_text}: the update count is a whole number >= 1")
    updates = int(updates_text) if star else None
    spec, _, nstep_text = spec.partition("/")
    try:
        nstep = int(nstep_text) if nstep_text else None
    except ValueError:
        raise SystemExit(f"--refit {spec}/{nstep_text}: the n-step is a whole number >= 1") from None
    if nstep is not None and nstep < 1:
        raise SystemExit(f"--refit {spec}/{nstep_text}: the n-step is a whole number >= 1")
    spec, _, target = spec.partition("+")
    if target not in ("", "sample", "mean"):
        raise SystemExit(f"--refit {spec}+{target}: the target's latent action is +sample or +mean")
    head, _, ratio = spec.partition("@")
    size, _, init = head.partition(":")
    try:
        members, offline_ratio = int(size), (float(ratio) if ratio else None)
    except ValueError:
        raise SystemExit(f"--refit {spec!r}: expected MEMBERS[:fresh|run][@OFFLINE_RATIO], e.g. 2:run@0") from None
    if init not in ("", "fresh", "run") or not (offline_ratio is None or 0.0 <= offline_ratio <= 1.0):
        raise SystemExit(f"--refit {spec!r}: init is fresh or run, the offline ratio in [0, 1]")
    if init == "run" and members != run_members:
        raise SystemExit(f"--refit {spec!r}: 'run' continues the run's {run_members}-member critic")
    return RefitSpec(members, init == "run", offline_ratio, target or None, nstep, updates)


def refit_critic(built, online_state: dict, spec: RefitSpec, subset: int | None, updates: int, seed: int):
    """A `spec.members`-critic fitted for `updates` TD steps as the run's own critic was (see the module doc): fresh,
    or continuing from the run's own weights; on the run's batch mix or another dataset share; with the run's TD
    target, or another latent action at s' / another n."""
    from spaars_robot.algos.base import fused_adam, polyak_update
    from spaars_robot.data.replay import ReplayBuffer, mixed_batch
    from spaars_robot.nn.critics import QEnsemble

    agent, offline = built.agent, built.offline
    cfg = agent.config.pretrain
    online = ReplayBuffer(max(int(online_state["size"]), 1), offline.obs.shape[1], offline.action.shape[1])
    online.load_state_dict(online_state)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    members, offline_ratio = spec.members, spec.offline_ratio
    if spec.from_run:
        critic = copy.deepcopy(built.nets.critic).requires_grad_(True).train()
        target = copy.deepcopy(agent.critic_target).requires_grad_(False)
    else:
        critic = QEnsemble(offline.obs.shape[1], offline.action.shape[1], cfg.hidden, members, layer_norm=True)
        target = copy.deepcopy(critic).requires_grad_(False)
    ratio = built.offline_ratio if offline_ratio is None else offline_ratio
    own_cfg = agent.cfg
    changes = {name: value for name, value in (("critic_target_action", spec.target_action),
                                               ("critic_nstep", spec.nstep)) if value is not None}
    agent.cfg = own_cfg.model_copy(update=changes)  # the agent's TD target reads its config: swapped for this fit
    try:
        opt = fused_adam(critic.parameters(), agent.cfg.lr)
        for _ in range(updates):
            batch = mixed_batch(offline, online, agent.cfg.batch_size, ratio, generator, agent.cfg.critic_nstep,
                                agent.cfg.gamma)
            loss, _ = agent.critic_td_loss(critic, target, batch, subset, generator)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            polyak_update(target, critic, agent.cfg.tau)
    finally:
        agent.cfg = own_cfg
    return critic.eval()


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, nargs="?", help="the run to diagnose (not with --rescore)")
    parser.add_argument("--rescore", type=Path, nargs="+", metavar="JSON",
                        help="print the critic/truth agreement of written results instead of running anything")
    parser.add_argument("--add-deployed", type=Path, nargs="+", metavar="JSON",
                        help="add the deployed gate's decisions to results written before they were kept")
    parser.add_argument("--add-rollout-gate", type=Path, nargs="+", metavar="JSON",
                        help="score the run's fitted rollout gate (spaars-robot gate fit) on written results' truth")
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/_pretrain_cache"))
    parser.add_argument("--states", type=int, default=300)
    parser.add_argument("--stride", type=int, default=10, help="env steps between saved states")
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=16)
    parser.add_argument("--noise", type=float, default=0.1, help="action noise std after the first action")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level of the paired t-test")
    parser.add_argument("--refit", default="", help="comma-separated refit specs MEMBERS[:fresh|run]"
                                                    "[@OFFLINE_RATIO][+sample|+mean][/NSTEP][*UPDATES], e.g. "
                                                    "2,10,2:run@0,2+mean,2+mean/5,2*5000 "
                                                    "(see the module doc)")
    parser.add_argument("--refit-updates", type=int, default=20_000)
    parser.add_argument("--refit-subset", type=int, default=2, help="targets: min over this many sampled members")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.rescore:
        print(json.dumps({str(path): rescore(path) for path in args.rescore}, indent=2))
        return
    if args.add_deployed:
        torch.set_num_threads(1)
        added = {str(path): add_deployed(path, args.cache_dir, args.stride) for path in args.add_deployed}
        print(json.dumps(added, indent=2))
        return
    if args.add_rollout_gate:
        torch.set_num_threads(1)
        added = {str(path): add_rollout_gate(path, args.cache_dir, args.stride) for path in args.add_rollout_gate}
        print(json.dumps(added, indent=2))
        return
    if args.run_dir is None:
        parser.error("a run directory is required (or --rescore / --add-deployed / --add-rollout-gate JSON ...)")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    config, task, built, layer = load_agent(args.run_dir, args.cache_dir)
    agent, nets = built.agent, built.nets
    refits = [parse_refit(spec, nets.critic.ensemble_size) for spec in args.refit.split(",") if spec.strip()]
    gate_cfg = config.online.gate
    states = collect_states(agent, task, args.states, args.stride, layer, seed_base=DIAGNOSTIC_SEED_BASE)
    obs, raw, lat, advantage, lcb, deployed = gate_inputs(agent, nets, states, gate_cfg.kappa)
    scale = float(choose_scale(gate_cfg.scale, agent.q_scale, agent.adv_scale))
    gate_open = (lcb > gate_cfg.tau_rel * scale).numpy()
    diffs = branch_differences(task, agent, states, raw, lat, args.horizon, config.online.gamma, args.noise,
                               args.repeats, layer)
    mean = diffs.mean(1)
    se = diffs.std(1, ddof=1) / math.sqrt(args.repeats) if args.repeats > 1 else np.zeros(len(states))
    p_values = paired_p_values(diffs)
    significant = p_values < args.alpha
    truth = mean[significant] > 0

    def accuracy(says_raw: np.ndarray) -> float | None:
        return sign_score(says_raw, mean, significant)[0]

    def interval(says_raw: np.ndarray) -> tuple[float, float] | None:
        return sign_score(says_raw, mean, significant)[1]

    mean_advantage = advantage.mean(0).numpy()

    def scored(critic_mean: np.ndarray) -> dict:
        """What every other critic scored on this truth reports: sign accuracy, its interval, agreement, per state."""
        return {"mean_advantage_sign_accuracy": accuracy(critic_mean > 0),
                "mean_advantage_sign_accuracy_ci95": interval(critic_mean > 0),
                "agreement": agreement(critic_mean, mean), "critic_advantage": critic_mean.tolist()}
    result = {
        "run": str(args.run_dir), "task": task.name, "seed": config.seed, "algo": config.algo,
        "safety_spec": None if config.safety_spec is None else Path(config.safety_spec).name,
        "states": len(states), "horizon": args.horizon, "repeats": args.repeats, "noise": args.noise,
        "gamma": config.online.gamma, "gate": gate_cfg.model_dump(mode="json"), "gate_scale": scale,
        "significance": {"test": "paired t, two-sided", "alpha": args.alpha,
                         "expected_by_chance": round(args.alpha * len(states), 1)},
        "significant_states": int(significant.sum()),
        "raw_truly_better_share": float(truth.mean()) if significant.any() else None,
        "sign_accuracy": accuracy(gate_open), "sign_accuracy_ci95": interval(gate_open), "stride": args.stride,
        **deployed_scores(deployed, p_values, mean, args.alpha),
        "mean_advantage_sign_accuracy": accuracy(mean_advantage > 0),
        "mean_advantage_sign_accuracy_ci95": interval(mean_advantage > 0),
        "member_sign_accuracy": [accuracy(advantage[e].numpy() > 0) for e in range(advantage.shape[0])],
        "gate_open_rate": float(gate_open.mean()),
        "true_advantage_abs_mean": float(np.abs(mean).mean()),
        "critic_advantage_abs_mean": float(np.abs(mean_advantage).mean()),
        "action_distance_mean": float((raw - lat).norm(dim=-1).mean()),
        # does the critic rank at all, not only by sign: Spearman's rho between its advantage and the truth over
        # every state (noise included), the sign accuracy where the critic is most sure (top half of |A|) and where a
        # wrong choice costs most (top half of the true |difference|)
        "rank_correlation": float(stats.spearmanr(mean_advantage, mean).statistic),
        "agreement": agreement(mean_advantage, mean), "gate_critic": gate_cfg.critic,
        "confident_half_sign_accuracy": top_half_accuracy(mean_advantage, mean, significant, mean_advantage),
        "costly_half_sign_accuracy": top_half_accuracy(mean_advantage, mean, significant, mean),
        # unrounded where `--rescore` reads them: advantages are ~1e-4 of |Q|, and rounding moved r by 0.007
        "per_state": {"true_difference": mean.tolist(), "standard_error": se.round(6).tolist(),
                      "p_value": p_values.round(6).tolist(), "critic_advantage": mean_advantage.tolist(),
                      "lcb": lcb.numpy().round(6).tolist(), "gate_open": gate_open.astype(int).tolist(),
                      "deployed_open": deployed.astype(int).tolist(),
                      "action_distance": (raw - lat).norm(dim=-1).numpy().round(6).tolist(),
                      # the dataset CVAE's score of the raw action (above support_threshold: out of support, where
                      # the runtime's monitor would refuse it): are the raw actions the critics overrate unsupported?
                      "raw_support_score": nets.cvae.support_score(obs, raw).numpy().tolist()},
        "support_threshold": float(nets.support_threshold),
    }
    if agent.held_out is not None:  # the gate read a held-out critic: score the shared one on the same truth
        result["shared_critic"] = scored(member_advantages(nets.critic, obs, raw, lat).mean(0).numpy())
    if refits:
        online_state = safe_torch_load(args.run_dir / "checkpoint.pt")["online"]
        result["refit"] = []
        for spec in refits:
            members, t_fit = spec.members, time.perf_counter()
            updates = args.refit_updates if spec.updates is None else spec.updates
            with torch.enable_grad():
                critic = refit_critic(built, online_state, spec, min(args.refit_subset, members),
                                      updates, config.seed)
            refit_adv = member_advantages(critic, obs, raw, lat)
            refit_mean = refit_adv.mean(0).numpy()
            refit_open = (lcb_of(refit_adv, gate_cfg.kappa) > 0).numpy()
            result["refit"].append({
                "members": members, "updates": updates, "target_subset": min(args.refit_subset, members),
                "offline_ratio": built.offline_ratio if spec.offline_ratio is None else spec.offline_ratio,
                "init": "run" if spec.from_run else "fresh",
                "target_action": spec.target_action or config.online.critic_target_action,
                "nstep": spec.nstep or config.online.critic_nstep,
                **scored(refit_mean),
                "lcb_positive_sign_accuracy": accuracy(refit_open), "lcb_positive_rate": float(refit_open.mean()),
                "member_sign_accuracy": [accuracy(refit_adv[e].numpy() > 0) for e in range(members)],
                "critic_advantage_abs_mean": float(np.abs(refit_mean).mean()),
                "rank_correlation": float(stats.spearmanr(refit_mean, mean).statistic),
                "confident_half_sign_accuracy": top_half_accuracy(refit_mean, mean, significant, refit_mean),
                "costly_half_sign_accuracy": top_half_accuracy(refit_mean, mean, significant, mean),
                "fit_seconds": round(time.perf_counter() - t_fit, 1)})
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
