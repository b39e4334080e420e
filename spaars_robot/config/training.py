"""Every hyperparameter of training, typed and documented (d3rlpy-style config, separate from the maths).

Beside the task configs because every layer reads it: algorithms take their section, the runner the
budgets, export the run's resolved copy.

Named protocols (`smoke`, `short`, `paper`) are YAML files in `sim/protocols/` that set these fields;
`--set key.sub=value` overrides any field from the command line.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from spaars_robot.config.loading import data_root, load_yaml_model
from spaars_robot.config.ranges import ranges_problem
from spaars_robot.errors import ConfigError

Algo = Literal["spaars", "iql", "latent", "raw", "sac", "spar", "bc", "td3bc", "supe", "spaars-supe"]
SHARED_CRITIC_ALGOS = ("spaars", "latent", "raw")  # SPAARSAgent and its ablations (algos/spaars.py)
SKILL_ALGOS = ("supe", "spaars-supe")  # skill policies (algos/supe.py, algos/spaars_supe.py)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PretrainConfig(_Strict):
    """Offline pretraining (CVAE, IQL critics, initial raw and latent policies); cached by content hash."""

    steps: int = Field(100_000, ge=1, description="gradient steps on the dataset (all networks updated per step)")
    batch_size: int = Field(256, ge=1)
    hidden: tuple[int, ...] = Field((256, 256), description="MLP widths of critics, value and policies")
    cvae_hidden: tuple[int, ...] = Field((256, 256), description="CVAE widths (PLAS uses 750x750; see BENCHMARKS)")
    cvae_latent_dim: int | None = Field(None, ge=1, description="CVAE latent k; None = 2 x action_dim (PLAS)")
    cvae_kl_weight: float = Field(
        0.05, ge=0, description="KL weight of the CVAE loss. PLAS's 0.5 collapses the latent space on single-policy "
                                "datasets (decoder ignores z); 0.05 is the widest-reaching weight whose latent-box "
                                "decodes stay in support (BENCHMARKS.md, 'CVAE KL weight')")
    cvae_lr: float = Field(3e-4, gt=0)
    lr: float = Field(3e-4, gt=0, description="Adam lr of critics, value and actors")
    gamma: float = Field(0.99, gt=0, lt=1)
    tau: float = Field(0.005, gt=0, le=1, description="Polyak rate of target critics")
    ensemble_size: int = Field(2, ge=2, description="critic ensemble members (shared by every algorithm)")
    target_subset: int | None = Field(None, ge=1, description="critic targets: min over this many members sampled "
                                                              "per update (RLPD/SUPE: 2 of 10); None = min over all")
    layer_norm: bool = Field(True, description="LayerNorm in critics (RLPD/SUPE stabiliser for online updates)")
    expectile: float = Field(0.7, gt=0.5, lt=1, description="IQL expectile tau for V")
    awr_beta: float = Field(3.0, gt=0, description="IQL advantage temperature for the raw actor")
    awr_max_weight: float = Field(100.0, gt=0)
    z_max: float = Field(2.0, gt=0, description="latent action bound (PLAS max_latent_action)")
    latent_actor_start: float = Field(0.5, ge=0, le=1, description="fraction of steps before PLAS latent actor training starts")
    support_quantile: float = Field(0.99, gt=0, lt=1, description="quantile of dataset support scores = threshold")
    support_samples: int = Field(50_000, ge=100, description="dataset pairs used to calibrate the support threshold")
    reward_scale: Literal["iql", "none"] = Field("iql", description="iql: rewards x 1000/(max-min episode return)")
    observation_dims: tuple[tuple[int, int], ...] | None = Field(
        None, description="half-open [start, stop) ranges of the observation the networks read; the other dims are "
                          "zeroed after normalisation, so no network can use them (SUPE reads kitchen's joint and "
                          "object positions only). None: the task file's `network_observation`, else every dim")

    @model_validator(mode="after")
    def _ranges_ordered(self) -> PretrainConfig:
        problem = None if self.observation_dims is None else ranges_problem(self.observation_dims)
        if problem:
            raise ValueError(f"observation_dims {problem}")
        return self


class GateConfig(_Strict):
    """Advantage gate: raw action only when LCB[Q(s,a_raw) - Q(s,a_lat)] > tau (methods.md 6.6)."""

    kappa: float = Field(1.0, ge=0, description="ensemble std multiplier in the lower confidence bound")
    scale: Literal["q", "advantage"] = Field(
        "q", description="what tau_rel and hysteresis_rel are fractions of: the running mean |Q| (q), or the mean "
                         "|Q(s,a_raw) - Q(s,a_lat)| over recently visited states, recalibrated at every evaluation "
                         "(advantage). With q, 0.01 hysteresis is far wider than the advantages and latches the gate "
                         "open (BENCHMARKS.md, gate diagnostics)")
    tau_rel: float = Field(0.0, description="threshold as a fraction of the scale")
    hysteresis_rel: float = Field(0.01, ge=0, description="stay raw while LCB > tau - this x scale")
    critic: Literal["shared", "held_out"] = Field(
        "shared", description="which critic the gate reads: the shared critic the actors maximise (shared), or a "
                              "second ensemble fitted to the same TD targets on the same batches that no actor ever "
                              "takes a gradient through (held_out; spaars only). Built to test whether actors climbing "
                              "the shared critic made its advantages anti-correlated with the truth (issue 16); on "
                              "hopper the held-out critic ranked no better (BENCHMARKS.md, issue 16 afternoon). A "
                              "critic the gate owns is what a reset or refreshed gate critic builds on")


class TransitionConfig(_Strict):
    """Latent -> gated switch: exploration plateau and raw-policy calibration, with a hard cap (6.4)."""

    t_min: int = Field(20_000, ge=0, description="earliest env step for the switch")
    t_max: int = Field(50_000, ge=0, description="env step at which the switch happens regardless")
    window: int = Field(5, ge=2, description="evaluations in the plateau window")
    plateau_eps: float = Field(0.02, ge=0, description="max relative change of eval return and RND novelty")
    novelty_reference: Literal["window", "initial"] = Field(
        "window", description="what the novelty change is relative to: the window's own mean, or the novelty at the "
                              "first evaluation (methods.md 6.4's Definition-1 reading)")
    bc_error_max: float = Field(0.01, gt=0, description="max raw-vs-decoded-latent BC error: squared error summed over "
                                                        "action dimensions, mean over recently visited states")
    max_gate_rate: float = Field(0.5, gt=0, le=1, description="switch only if the gate would fire below this rate")
    rule: Literal["relative", "evidence"] = Field(
        "relative", description="relative: every signal's relative change over the window below plateau_eps and the "
                                "BC error below bc_error_max (the rule the committed `short` results ran with; it never "
                                "fired there). evidence: the return's slope over the window is not significantly "
                                "positive given the evaluations' own scatter (one-sided t-test at `significance`), RND "
                                "novelty has fallen below novelty_drop x its first value, and the BC error has stopped "
                                "falling (relative change over the window below bc_trend_eps) or is below bc_error_max")
    significance: float = Field(0.05, gt=0, lt=0.5, description="evidence rule: one-sided level of the slope test")
    novelty_drop: float = Field(0.5, gt=0, le=1, description="evidence rule: novelty plateau below this x its first value")
    bc_trend_eps: float = Field(0.1, gt=0, description="evidence rule: max relative BC-error change over the window")


class OnlineConfig(_Strict):
    """Online fine-tuning. Owns every value its phase uses, so tuning it never changes pretraining's cache key."""

    env_steps: int = Field(100_000, ge=0)
    gamma: float = Field(0.99, gt=0, lt=1, description="discount of the online critic targets")
    tau: float = Field(0.005, gt=0, le=1, description="Polyak rate of the online target critics")
    hidden: tuple[int, ...] = Field((256, 256), description="MLP widths of networks created online (RND; sac's "
                                                            "actor and critics)")
    random_steps: int = Field(5_000, ge=0, description="sac only: uniform-action warm-up steps")
    expectile: float = Field(0.7, gt=0.5, lt=1, description="iql only: expectile of V during fine-tuning")
    awr_beta: float = Field(3.0, gt=0, description="iql only: AWR temperature during fine-tuning")
    awr_max_weight: float = Field(100.0, gt=0, description="iql only: AWR weight cap during fine-tuning")
    utd: int = Field(1, ge=1, description="gradient updates per env step")
    batch_size: int = Field(256, ge=1)
    offline_ratio: float = Field(0.5, ge=0, le=1, description="share of each batch drawn from the dataset")
    lr: float = Field(3e-4, gt=0)
    init_temperature: float = Field(0.05, gt=0, description="latent SAC temperature (SUPE value)")
    raw_explore_noise: float = Field(0.1, ge=0, description="Gaussian std added to raw actions online")
    alpha_bc: float = Field(2.5, gt=0, description="TD3+BC weight of the Q term: SPAARS's gated raw actor, "
                                                "and --algo td3bc's actor")
    concurrent_bc: bool = Field(True, description="clone the raw policy onto decoded latent actions during the latent phase")
    hard_switch: bool = Field(False, description="ablation: after the transition always execute raw (no gate)")
    latent_phase_raw: Literal["bc", "td3bc"] = Field(
        "bc", description="spaars: the raw policy's update during the latent phase: concurrent BC onto the decoded "
                          "latent actions (bc, the paper's), or the gated phase's TD3+BC against the shared critic "
                          "(td3bc: the raw actor improves off-policy from the latent phase's data, so it arrives at "
                          "the switch trained, not only cloned; needs concurrent_bc)")
    gated_target: Literal["entry", "raw"] = Field(
        "entry", description="spaars, gated phase: the action at s' in the shared critic's TD target: raw where the "
                             "gate's entry test (LCB > tau x scale, no latch) passes and the latent action elsewhere "
                             "(entry: the committed runs' target; there the latched gate executed raw on ~99 % of "
                             "steps while the entry test passed on ~25 % of states, so the critic valued a mostly "
                             "latent continuation the deployed policy did not follow), or the raw mean everywhere "
                             "(raw: the critic values the raw continuation, as raw fine-tuning's critic does)")
    support_monitor: bool = Field(
        False, description="spaars, gated phase: the deployed runtime's support monitor in the loop: a raw action "
                           "about to be executed (in training the noisy one) whose dataset-CVAE support score is "
                           "out of range (the export's latch: threshold, hysteresis 0.1 x |threshold|) is replaced "
                           "by the latent action, in training and evaluation, as `serve` replaces it")
    raw_form: Literal["free", "latent_residual"] = Field(
        "free", description="spaars/raw: the raw policy's form: free (the pretraining's AWR policy, TD3+BC online) or "
                            "latent_residual (the latent controller D(s, mean z(s)) plus a bounded residual "
                            "eps * tanh(Delta), zero at the start, trained by the same TD3+BC loss; algos/"
                            "latent_residual.py says why)")
    raw_residual_bound: float = Field(
        0.3, gt=0, le=2, description="raw_form=latent_residual: eps, |raw - latent action| <= eps per action "
                                     "dimension (SPAR's residual_bound default: one trust region for both residuals)")
    raw_residual_objective: Literal["td3bc", "q"] = Field(
        "td3bc", description="raw_form=latent_residual, gated phase: the residual's loss. td3bc: the free raw "
                             "policy's TD3+BC loss, whose BC term anchored on the latent action holds the residual "
                             "near lambda * dQ/da / 2 (0.004 on hopper, far inside the bound); q: the normalised Q "
                             "alone, the bound being the trust region (BCQ's and PLAS's perturbation layer)")
    rnd_feature_dim: int = Field(64, ge=1)
    target_subset: int | None = Field(None, ge=1, description="online critic targets: min over this many members "
                                                              "sampled per update; None = min over all")
    raw_init: Literal["awr", "spar"] = Field(
        "awr", description="spaars/raw: the raw policy starts as the pretraining's AWR policy (awr), or as SPAR's "
                           "rectified policy (spar: the `spar` section's offline stages run first, and the raw policy "
                           "then improves by Latent Self-Imitation instead of concurrent BC / TD3+BC)")
    critic_target_action: Literal["sample", "mean"] = Field(
        "sample", description="spaars/latent/raw: the latent action in the shared critic's TD target at s': a decoded "
                              "sample z ~ pi_z(s') (sample: the exploring behaviour's value), or the decoded mean "
                              "(mean: the deployed controllers' value, what the gate's advantage is judged against)")
    critic_nstep: int = Field(
        1, ge=1, le=100, description="spaars/latent/raw: n of the shared critic's n-step TD target (1: one-step). "
                                     "The sum stops at episode ends; the bootstrap follows critic_target_action")
    update_precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="online gradient updates under a bf16 autocast (bf16): hidden layers in bf16, every "
                            "critic and value head, their targets and advantages in fp32; acting, the gate and "
                            "evaluation always fp32. Opt-in until its learning curves match fp32's (issue 16)")
    gate: GateConfig = GateConfig()
    transition: TransitionConfig = TransitionConfig()


class SPARConfig(_Strict):
    """SPAR's offline stages and its residual (algos/spar.py; choices the paper leaves open: docs/spar.md)."""

    anchor_steps: int = Field(50_000, ge=0, description="stage (i): behaviour-cloning updates of the frozen anchor")
    residual_steps: int = Field(10_000, ge=0, description="stage (i): residual regression onto what the anchor misses")
    lsi_steps: int = Field(10_000, ge=0, description="stage (iii): Latent Self-Imitation updates of the residual "
                                                     "(chosen on training seed 0: docs/spar.md, 'LSI budget')")
    batch_size: int = Field(256, ge=1)
    lr: float = Field(3e-4, gt=0, description="Adam lr of anchor and residual (offline and online)")
    hidden: tuple[int, ...] = Field((256, 256), description="MLP widths of anchor and residual")
    residual_bound: float = Field(0.3, gt=0, le=2, description="eps: |residual| <= eps per action dimension")
    zero_init: bool = Field(True, description="residual's last layer starts at zero (policy = anchor at init)")
    candidates: int = Field(16, ge=2, description="LSI residual candidates per state (candidate 0: current action)")
    latent_sigma: float = Field(0.5, gt=0, description="candidate std in the CVAE latent space, in units of the "
                                                       "dataset's per-dimension spread of latent codes")
    temperature: float = Field(0.5, gt=0, description="LSI weights softmax(Q / (temperature x mean within-state "
                                                      "std of Q))")
    lsi_decode_bf16: bool = Field(False, description="decode LSI's candidates under bf16 autocast (the critic "
                                                    "scores them in fp32): ~4.5x faster decoding where the CPU has "
                                                    "AMX; off until its curve matches fp32 (docs/spar.md)")


class SUPEConfig(_Strict):
    """SUPE (methods.md 3): OPAL skills learned offline, a high-level SAC over skills online (algos/supe.py).

    Defaults are the SUPE authors' settings (chunk H = 4, skill dim 8, BiGRU 256 x 2, KL 0.1, 10-critic LayerNorm
    ensemble with min over 2, RND bonus 8, 5k prior-skill steps); budgets and sizes a 2-core machine can pay
    for are set by the protocol files (docs/supe.md says what each changes).
    """

    horizon: int = Field(4, ge=1, le=64, description="H: env steps per skill (chunk length)")
    skill_dim: int = Field(8, ge=1, description="dimension of the skill z")
    hidden: tuple[int, ...] = Field((256, 256), description="MLP widths of the skill VAE's state net, prior, decoder")
    gru_hidden: int = Field(256, ge=1, description="skill encoder: hidden size of the bidirectional GRU")
    gru_layers: int = Field(2, ge=1, description="skill encoder: GRU layers")
    kl_weight: float = Field(0.1, ge=0, description="weight of KL(q || prior) in the skill VAE loss")
    skill_steps: int = Field(1_000_000, ge=0, description="offline skill-VAE updates (cached like pretraining)")
    skill_lr: float = Field(3e-4, gt=0)
    batch_size: int = Field(256, ge=1, description="chunks per skill-VAE batch and per high-level update")
    high_hidden: tuple[int, ...] = Field((256, 256, 256), description="high-level actor and critic MLP widths")
    ensemble_size: int = Field(10, ge=1, description="high-level critic ensemble members (LayerNorm)")
    target_subset: int = Field(2, ge=1, description="targets: min over this many members sampled per update")
    lr: float = Field(3e-4, gt=0, description="high level: actor, critic, temperature, RND and reward model")
    init_temperature: float = Field(0.05, gt=0, description="high-level SAC temperature at the start (kitchen: 1.0)")
    rnd_coef: float = Field(8.0, ge=0, description="optimism: RND(s, z) bonus added to every high-level reward")
    prior_steps: int = Field(5_000, ge=0, description="env steps of skills sampled from the prior before the "
                                                      "high-level policy acts (and updates start)")
    skill_space: Literal["tanh", "prior"] = Field(
        "tanh", description="what the high level's squashed action u in (-1, 1) means (algos/supe.skill_from_action). "
        "tanh: SUPE's, the skill z = atanh(u). prior: z = mu_p(s) + sigma_p(s) atanh(u), u whitened by the "
        "learned prior at the state where the skill starts, so u = 0 is the prior's most likely skill and the "
        "actor's box spans the prior's spread, not absolute z (docs/supe.md, \"Where the high level's skills "
        "land\"; not SUPE)")
    offline_reward: Literal["auto", "min", "model", "data"] = Field(
        "auto", description="reward of relabelled offline chunks: model = a reward model r(s, z) fitted on online "
        "chunks (SUPE, kitchen), min = the dataset's minimum reward (SUPE, antmaze), data = the stored rewards "
        "(not SUPE: for comparison), auto = what SUPE does for the task: min for success-scored tasks (antmaze), "
        "model otherwise")


class EvalConfig(_Strict):
    every: int = Field(5_000, ge=1, description="env steps between evaluations")
    episodes: int = Field(10, ge=1)
    checkpoint_every: int = Field(5_000, ge=1, description="env steps (online) and updates (offline pretraining) "
                                                       "between resumable checkpoints")
    seed_base: int = Field(1_000_000, description="eval episode seeds (never used for training)")
    early_steps: int = Field(50_000, ge=1, description="online steps summarised as 'early' (out-of-support rate, "
                                                       "falls): the `short` protocol's latest switch")


class TrainConfig(_Strict):
    protocol: str = "short"
    task: str
    dataset: str
    algo: Algo = "spaars"
    seed: int = 0
    threads: int = Field(1, ge=1, description="torch threads per run (seeds run as parallel processes)")
    device: Literal["cpu", "cuda"] = Field("cpu", description="where every network, optimiser state and buffer "
                                           "lives (`train --device`; auto is resolved before the run, so this is "
                                           "what it ran on); a resume may change it (nn/device.py)")
    wandb: str | None = Field(None, description="Weights & Biases project that also receives the run's scalars "
                                                "(`train --wandb`); None = off, and wandb is never imported")
    tag: str = Field("", description="set by `train` when --set changes a hyperparameter of the protocol: "
                                     "'set-<hash>', so such runs never share a run directory or summary file")
    tag_sets: dict[str, Any] = Field(default_factory=dict, description="what the tag stands for: each hyperparameter "
                                     "that differs from the protocol, as dotted key -> value (copied into summaries)")
    safety_spec: str | None = Field(None, description="safety spec YAML whose SafetyLayer (the code `serve` runs) "
                                                      "shapes every online training and evaluation action; None = "
                                                      "no layer (set by `train --safety-spec`, default the task's spec)")
    safety_spec_sha256: str | None = Field(None, description="SHA-256 of that file when the run started: a resume "
                                                             "refuses a changed spec, export records it")
    pretrain: PretrainConfig = PretrainConfig()
    online: OnlineConfig = OnlineConfig()
    spar: SPARConfig = SPARConfig()
    supe: SUPEConfig = SUPEConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _shared_critic_options_need_the_shared_critic(self) -> TrainConfig:
        """The TD-target options live in SPAARSAgent's critic: on another algorithm they would be silently ignored."""
        if self.algo not in SHARED_CRITIC_ALGOS:
            changed = [f"online.{name}={getattr(self.online, name)}" for name, default in
                       (("critic_nstep", 1), ("critic_target_action", "sample")) if getattr(self.online, name) != default]
            if changed:
                raise ValueError(f"{', '.join(changed)}: only {', '.join(SHARED_CRITIC_ALGOS)} have that critic "
                                 f"(algo {self.algo})")
        if self.online.latent_phase_raw != "bc" and (self.algo != "spaars" or not self.online.concurrent_bc
                                                     or self.online.raw_init != "awr"):
            raise ValueError(f"online.latent_phase_raw={self.online.latent_phase_raw}: only spaars with concurrent BC "
                             f"and the AWR raw policy has a latent-phase raw update to change (algo {self.algo}, "
                             f"concurrent_bc {self.online.concurrent_bc}, raw_init {self.online.raw_init})")
        if self.online.gated_target != "entry" and self.algo != "spaars":
            raise ValueError(f"online.gated_target={self.online.gated_target}: only spaars has a gated phase whose "
                             f"critic target the gate chooses (algo {self.algo})")
        if self.online.support_monitor and self.algo != "spaars":
            raise ValueError(f"online.support_monitor: only spaars's gated phase has a latent action to fall back to "
                             f"(algo {self.algo})")
        if self.online.raw_form != "free" and (self.algo not in ("spaars", "raw") or self.online.raw_init != "awr"):
            raise ValueError(f"online.raw_form={self.online.raw_form}: only spaars and raw execute a raw policy whose "
                             f"form this sets, and not with SPAR's rectified policy (algo {self.algo}, raw_init "
                             f"{self.online.raw_init})")
        if self.online.raw_form != "latent_residual":
            changed = [f"online.{name}={getattr(self.online, name)}"
                       for name in ("raw_residual_bound", "raw_residual_objective")
                       if getattr(self.online, name) != OnlineConfig.model_fields[name].default]
            if changed:
                raise ValueError(f"{', '.join(changed)}: only online.raw_form=latent_residual has that residual "
                                 f"(raw_form {self.online.raw_form})")
        if self.online.gate.critic != "shared" and self.algo != "spaars":
            raise ValueError(f"online.gate.critic={self.online.gate.critic}: only spaars's gate reads a held-out "
                             f"critic (algo {self.algo}: its gate never decides, or it has another agent)")
        return self


def protocols_dir() -> Path:
    return data_root() / "sim" / "protocols"


def _set_path(tree: dict, dotted: str, value: object) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {key} is not a section")
    node[keys[-1]] = value


# Set by the command (and naming the run directory and summary), so never by --set: `--set seed=1` with
# `--seeds 0` would train seed 1 into seed0/ and overwrite another run's committed summary.
COMMAND_FIELDS = frozenset({"protocol", "task", "dataset", "algo", "seed", "tag", "tag_sets", "safety_spec",
                            "safety_spec_sha256"})


def parse_set(item: str) -> tuple[str, Any]:
    """One `--set key.path=value` string -> (key path, YAML-parsed value); malformed is a ConfigError."""
    import yaml

    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc.__class__.__name__}: "
                          f"{str(exc).splitlines()[0]})") from exc


def resolve_config(protocol: str, overrides: dict, sets: list[str] | None = None) -> TrainConfig:
    """Protocol YAML + explicit fields + `--set a.b=value` strings (YAML-parsed values) -> TrainConfig."""
    from pydantic import ValidationError

    from spaars_robot.config.loading import format_validation_error

    path = Path(protocol) if protocol.endswith((".yaml", ".yml")) else protocols_dir() / f"{protocol}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in protocols_dir().glob("*.yaml")))
        raise ConfigError(f"unknown protocol {protocol!r}; known: {known}")
    base = load_yaml_model(path, ProtocolFile).model_dump(exclude_unset=True)
    base.pop("description", None)
    tree: dict = {**base, "protocol": path.stem, **overrides}
    for item in sets or []:
        key, value = parse_set(item)
        if key.split(".")[0] in COMMAND_FIELDS:
            raise ConfigError(f"--set {key}: {key.split('.')[0]} comes from the command line "
                              f"(--task, --dataset, --algo, --seeds, --protocol), not from --set")
        _set_path(tree, key, value)
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(f"{path} + command line", exc)) from exc


_HYPERPARAMETER_SECTIONS = {"pretrain", "online", "spar", "eval"}


def _hyperparameter_sections(config: TrainConfig) -> set[str]:
    """The sections a run's tag hashes: `supe` too for the skill algorithms, which read it.

    Until 2026-12-06 `supe` was left out, so `--set supe.init_temperature=1.0` wrote the protocol's own run
    directory and summary name. It is added for the skill algorithms only: the locomotion runs' committed tags
    (whose algorithms never read `supe`) keep their hashes, and no skill run had been tagged."""
    return _HYPERPARAMETER_SECTIONS | {"supe"} if config.algo in SKILL_ALGOS else _HYPERPARAMETER_SECTIONS


# Fields added after tags were first committed, with their default: left out of the tag's hash while they hold it,
# so a run tagged before they existed (e.g. set-e144a1f8) keeps its tag, run directory and summary name.
_ADDED_NEUTRAL: dict[str, Any] = {
    "supe.skill_space": "tanh",
    "online.raw_init": "awr",
    "online.critic_target_action": "sample",
    "online.critic_nstep": 1,
    "online.gate.critic": "shared",
    "spar": SPARConfig().model_dump(mode="json"),
    "pretrain.observation_dims": None,
    "online.update_precision": "fp32",
    "online.latent_phase_raw": "bc",
    "online.gated_target": "entry",
    "online.support_monitor": False,
    "online.raw_form": "free",
    "online.raw_residual_bound": 0.3,
    "online.raw_residual_objective": "td3bc",
}


def _tag_payload(config: TrainConfig) -> dict:
    tree = config.model_dump(mode="json", include=_hyperparameter_sections(config))
    for dotted, neutral in _ADDED_NEUTRAL.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for key in parents:
            node = node.get(key, {})
        if node.get(leaf) == neutral:
            node.pop(leaf)
    return tree


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def hyperparameter_changes(config: TrainConfig, protocol_default: TrainConfig) -> dict[str, Any]:
    """Every hyperparameter where `config` departs from its protocol, as dotted key -> value.

    Stored with a tagged run's summary so a committed result says what it was run with, not only a hash.
    """
    mine = _flatten(config.model_dump(mode="json", include=_hyperparameter_sections(config)))
    theirs = _flatten(protocol_default.model_dump(mode="json", include=_hyperparameter_sections(config)))
    return {key: value for key, value in sorted(mine.items()) if theirs.get(key) != value}


def hyperparameter_tag(config: TrainConfig, protocol_default: TrainConfig) -> str:
    """'' when `config` has its protocol's hyperparameters, else 'set-' + 8 hex digits of them.

    Without it a run with `--set online.gate.kappa=2` would write the same run directory and committed
    summary file as the protocol's own run of that task/algo/seed, silently replacing its result.
    """
    import hashlib
    import json

    mine = _tag_payload(config)
    if mine == _tag_payload(protocol_default):
        return ""
    return "set-" + hashlib.sha256(json.dumps(mine, sort_keys=True).encode()).hexdigest()[:8]


class ProtocolFile(_Strict):
    """A protocol YAML sets budgets and any hyperparameter; task/dataset/algo/seed come from the command."""

    description: str = ""
    pretrain: dict = {}
    online: dict = {}
    spar: dict = {}
    supe: dict = {}
    eval: dict = {}


@dataclass(frozen=True)
class RunFacts:
    """What a run's config.yaml records beside its TrainConfig (written by the runner)."""

    dataset_path: Path | None
    bf16: bool
    command: str
    precision: dict | None = None  # how bf16 was chosen (`--precision`); absent in runs made before it


def load_run_config(run_dir: Path | str) -> tuple[TrainConfig, RunFacts]:
    """A run directory's resolved config.yaml, read by resume and export alike; a damaged one is a clear error."""
    import yaml
    from pydantic import ValidationError

    from spaars_robot.config.loading import format_validation_error

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)")
    try:
        raw = yaml.safe_load(path.read_text())
        if not isinstance(raw, dict) or "dataset_path" not in raw or "bf16" not in raw:
            raise ConfigError(f"{path}: not a run config written by `spaars-robot train` (no dataset_path/bf16)")
        ds_path, use_bf16, command = raw.pop("dataset_path"), raw.pop("bf16"), raw.pop("command", None)
        precision = raw.pop("precision", None)  # a record of how bf16 was chosen; `bf16` is what the run uses
        facts = RunFacts(None if ds_path in (None, "None") else Path(ds_path), bool(use_bf16), command or "",
                         precision if isinstance(precision, dict) else None)
        return TrainConfig.model_validate(raw), facts
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); the run cannot be resumed "
                          "or exported from it") from exc
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from exc
