"""Read a finished (or checkpointed) run back: its config, and the deployable PolicyStack for export."""
from __future__ import annotations

import copy
from pathlib import Path

from spaars_robot.algos.gate import choose_scale
from spaars_robot.config.training import SHARED_CRITIC_ALGOS, SKILL_ALGOS, load_run_config
from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.data.episodes import read_metadata
from spaars_robot.data.files import safe_torch_load
from spaars_robot.errors import SpaarsError
from spaars_robot.export.manifest import Controller
from spaars_robot.export.stack import PolicyStack, RunExportInfo, SkillPolicyStack, SupportCalibration

CALIBRATION_OBSERVATIONS = 256


def seed_run_dirs(run_dir: Path) -> list[Path]:
    """[run_dir] when it is a seed run (has config.yaml), else its `seed*/` runs in seed order (maybe none)."""
    if (run_dir / "config.yaml").exists():
        return [run_dir]
    return sorted((p.parent for p in run_dir.glob("seed*/config.yaml")), key=lambda p: (len(p.name), p.name))


def seed_run_dir(run_dir: Path | str) -> Path:
    """The one seed run a directory names: itself (it has config.yaml), or its only `seed*/` run.

    `train` writes `runs/<name>/seed<N>/`, so users pass the group directory it printed; with several seeds
    the choice of policy is theirs, and the error lists the seed directories to pass instead.
    """
    run_dir = Path(run_dir)
    seeds = seed_run_dirs(run_dir)
    if seeds == [run_dir]:
        return run_dir
    if len(seeds) == 1:
        return seeds[0]
    if len(seeds) > 1:
        raise SpaarsError(f"{run_dir} holds {len(seeds)} seed runs ({', '.join(p.name for p in seeds)}); "
                          f"export one of them, e.g. {seeds[0]}")
    return run_dir  # load_run_config says what is missing


def export_spec(config: dict, given: str | None) -> tuple[str | None, str | None]:
    """(spec to validate and record, a warning or None) for a run trained with `config`.

    Default: the spec the run trained under, so the bundle records the limits its policy learned with and
    `serve` accepts it as is. A different spec is allowed (the user may deploy on another robot) but said.
    """
    from spaars_robot.export.safety_binding import spec_path, spec_sha256

    trained, trained_sha = config.get("safety_spec"), config.get("safety_spec_sha256")
    if trained is None:
        recorded = given or f"safety/{config['task']}.yaml"
        return given, (f"the run trained without a safety layer in the loop; its policy meets {recorded}'s limits "
                       f"for the first time when served (train with its default --safety-spec avoids that)")
    if given is None:
        # the recorded path is absolute: a moved checkout or a run trained from another worktree loses it, and
        # --safety (checked against the recorded hash below) is the way to name the same spec where it is now
        if not Path(trained).exists() or spec_sha256(Path(trained)) != trained_sha:
            raise SpaarsError(f"the run trained under safety spec {trained} (sha256 {str(trained_sha)[:12]}...), "
                              f"which is missing or has changed since; restore it, or pass --safety to record "
                              f"another spec")
        return trained, None
    if spec_sha256(spec_path(given)) != trained_sha:
        return given, (f"the run trained under {Path(trained).name} (sha256 {trained_sha[:12]}...), not under "
                       f"{given}; its policy was not trained with these limits")
    return given, None


GATES = ("critic", "rollout")
# algorithms whose evaluation executes one controller whatever their phase; the SPAARS family reads its checkpoint
RAW_ONLY, LATENT_ONLY = ("iql", "spar", "bc", "td3bc"), ("supe",)


def deployed_controller(algo: str, agent: dict, gate_form: str = "critic") -> Controller:
    """The controller the run's own evaluation executed (its agent's `act`), so the bundle serves what was scored;
    with `export --gate rollout` the gate fitted by `gate fit` (spaars, latent and raw runs) is what is asked for.

    A bundle gated by the critic whatever the algorithm serves another policy than the one scored: a walker2d SPAR
    bundle that scored 59 in training served the latent controller on every step and scored 0 (BENCHMARKS.md,
    "Serving a SPAR bundle").
    """
    if algo in RAW_ONLY:
        return "raw"
    if algo in LATENT_ONLY:
        return "latent"
    if algo not in (*SHARED_CRITIC_ALGOS, "spaars-supe"):  # the agents that record their phase
        raise SpaarsError(f"export does not know which controller a {algo} run deploys")
    if gate_form == "rollout":
        return "gated"
    if agent.get("phase") != "gated":  # latent-only, or SPAARS / SPAARS-SUPE before their switch
        return "latent"
    return "raw" if agent.get("force_raw") else "gated"  # raw fine-tuning and a hard switch execute raw everywhere


def load_run_for_export(run_dir: Path | str, gate_form: str = "critic"
                        ) -> tuple[PolicyStack | SkillPolicyStack, RunExportInfo]:
    """The run's latest checkpoint as a PolicyStack plus the facts the bundle manifest records.

    gate_form "rollout": the gate is the run's fitted rollout gate (`rollout_gate.pt`, `spaars-robot gate fit`)
    instead of the critic's LCB; the bundle's thresholds are 0 (the fitted margin is inside the graph: raw where the
    predicted difference exceeds it). Rebuilds the networks the way train/agents.agent_from_checkpoint does (export
    sits below train and cannot call it)."""
    if gate_form not in GATES:
        raise SpaarsError(f"unknown gate {gate_form!r} ({' | '.join(GATES)})")
    from spaars_robot.algos.offline import OfflineNets
    from spaars_robot.config.tasks import load_task

    run_dir = seed_run_dir(run_dir)
    config, facts = load_run_config(run_dir)
    if config.algo == "sac":
        raise SpaarsError(f"{run_dir}: --algo sac runs have no CVAE/latent policy; export a spaars/iql/latent/raw run")
    checkpoint = run_dir / "checkpoint.pt"
    if not checkpoint.exists():
        raise SpaarsError(f"{run_dir}: no checkpoint.pt yet")
    state = safe_torch_load(checkpoint)
    task = load_task(config.task)
    agent = state["agent"]
    if "nets" not in agent:
        raise SpaarsError(f"{run_dir}: its checkpoint holds no networks to export (a {config.algo} checkpoint written "
                          "before SUPE runs saved their frozen nets and skills); train it again to export it")
    nets = OfflineNets(task.obs_dim, task.action_dim, config.pretrain)
    nets.load_state_dict(agent["nets"])
    gate = config.online.gate
    skill_run = config.algo in SKILL_ALGOS
    controller = deployed_controller(config.algo, agent, gate_form)
    try:
        scale_form = gate.scale if controller == "gated" else "q"  # the thresholds only decide for a gated bundle
        gate_scale = float(choose_scale(scale_form, agent.get("q_scale", nets.q_scale), agent.get("adv_scale")))
    except ValueError as err:
        raise SpaarsError(f"{run_dir}: {err}; export it with a config that says gate.scale: q") from err
    raw_policy = nets.raw_policy
    if "spar" in agent:  # spar, bc, or spaars with online.raw_init=spar: raw = the rectified policy
        from spaars_robot.algos.spar import make_rectified

        raw_policy = make_rectified(task.obs_dim, task.action_dim, nets.latent_dim, config.spar)
        raw_policy.load_state_dict(agent["spar"])
    elif "raw_residual" in agent:  # spaars/raw with online.raw_form=latent_residual: the latent controller + residual
        from spaars_robot.algos.latent_residual import LatentResidualPolicy

        online = config.online
        raw_policy = LatentResidualPolicy(nets.latent_policy, nets.cvae, task.obs_dim, task.action_dim, online.hidden,
                                          online.raw_residual_bound)
        raw_policy.load_residual_state_dict(agent["raw_residual"])
    rollout_gate, gate_fit, hold = None, None, 1
    if gate_form == "rollout":
        if skill_run:
            raise SpaarsError(f"{run_dir}: a {config.algo} run has no rollout gate (spaars, latent or raw runs do)")
        from spaars_robot.export.rollout_gate_file import load_rollout_gate

        rollout_gate, record = load_rollout_gate(run_dir)
        hold = int(record.get("settings", {}).get("hold_steps", 1))  # the runtime holds it as gate fit played it
        gate_fit = {key: value for key, value in record.items() if key != "per_state"}  # the manifest stays small
        # in units of the largest fitted difference: O(1) numbers, and the graph's rounding relative to what it averages
        gate_scale = float(rollout_gate.values.abs().max()) or 1.0
    if skill_run:
        stack = _skill_stack(task.obs_dim, task.action_dim, config, agent, nets, gate_scale)
    else:
        stack = PolicyStack(nets.normalizer, raw_policy, nets.latent_policy, nets.cvae, _gate_critic(nets, agent),
                            gate.kappa, gate_scale=gate_scale, state_gate=rollout_gate).eval()
    dataset_path = facts.dataset_path
    metadata = read_metadata(dataset_path)
    dataset = OfflineDataset.load(dataset_path)
    step = max(1, len(dataset) // CALIBRATION_OBSERVATIONS)
    calibration_obs = dataset.obs[::step][:CALIBRATION_OBSERVATIONS].tolist()
    info = RunExportInfo(
        task=task.name, obs_dim=task.obs_dim, action_dim=task.action_dim, control_rate_hz=task.control_rate_hz,
        # relative: the stack divides by gate_scale; a rollout gate's output is already its prediction less its margin
        gate_threshold=0.0 if rollout_gate is not None else gate.tau_rel,
        gate_hysteresis=0.0 if rollout_gate is not None else gate.hysteresis_rel,
        support_threshold=float(nets.support_threshold),
        support_calibration=SupportCalibration(
            quantile=config.pretrain.support_quantile, dataset=str(metadata.get("dataset_id", dataset_path)),
            dataset_sha256=metadata.get("spaars_checksums", {}).get("main_data.hdf5", ""),
            samples=min(config.pretrain.support_samples, len(dataset))),
        run_dir=str(run_dir), algo=config.algo, seed=config.seed,
        train_command=facts.command, config=config.model_dump(mode="json"),
        calibration_obs=calibration_obs, controller=controller,
        gate_form="rollout_neighbours" if rollout_gate is not None else "critic_lcb", gate_fit=gate_fit,
        gate_hold_steps=hold,
        skill_horizon=config.supe.horizon if skill_run else None,
    )
    return stack, info


def _gate_critic(nets, agent: dict):
    """The critic the run's gate read (`online.gate.critic`): the shared one, or the held-out ensemble."""
    if "gate_critic" not in agent:
        return nets.critic
    critic = copy.deepcopy(nets.critic)  # same architecture (SPAARSAgent builds the held-out one from it)
    critic.load_state_dict(agent["gate_critic"])
    return critic


def _skill_stack(obs_dim: int, action_dim: int, config, agent: dict, nets, gate_scale: float) -> SkillPolicyStack:
    """SUPE / SPAARS-SUPE: the high-level policy, the skill VAE's decoder, and the per-step raw policy and critic
    (SPAARS-SUPE trains them online and saves them as q_lo / raw_policy; in SUPE they are the pretraining's)."""
    from spaars_robot.nn.policies import TanhGaussianPolicy
    from spaars_robot.nn.skills import SkillVAE

    cfg = config.supe
    high = TanhGaussianPolicy(obs_dim, cfg.skill_dim, cfg.high_hidden)
    high.load_state_dict(agent["actor"])
    skills = SkillVAE.from_config(obs_dim, action_dim, cfg)
    skills.load_state_dict(agent["skills"])
    if "q_lo" in agent:
        nets.critic.load_state_dict(agent["q_lo"])
        nets.raw_policy.load_state_dict(agent["raw_policy"])
    return SkillPolicyStack(nets.normalizer, nets.raw_policy, high, skills, nets.cvae, nets.critic,
                            config.online.gate.kappa, gate_scale=gate_scale, skill_space=cfg.skill_space).eval()
