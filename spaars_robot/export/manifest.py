"""`manifest.json`: the bundle describes itself, so the runtime never guesses shapes, rates or thresholds.

The manifest is the single source the server reads its schema, rates and decision thresholds from, and
it lists the SHA-256 of every other file in the bundle so a tampered or half-copied bundle is refused
(`export/bundle.py`). The same key facts are also written into the ONNX `metadata_props` (mjlab style),
so a graph file taken out of its bundle still says what it is.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

OUTPUT_NAMES = ("raw_action", "latent_action", "gate_advantage", "support_score")
SKILL_INPUT, CHOOSE_INPUT, SKILL_OUTPUT = "skill", "choose_skill", "skill_out"
BUNDLE_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
# the controller a bundle deploys: the gate's choice, the raw policy alone, or the latent controller alone
Controller = Literal["gated", "raw", "latent"]


class SupportCalibration(BaseModel):
    """How the support threshold was chosen: a quantile of the CVAE support score of dataset actions."""

    score: str = "cvae_negative_elbo"
    quantile: float
    dataset: str
    dataset_sha256: str
    samples: int


class TensorSchema(BaseModel):
    """One named float vector crossing the bundle boundary (an observation or an action)."""

    model_config = ConfigDict(extra="forbid")
    names: list[str]
    dim: int = Field(gt=0)
    dtype: Literal["float32"] = "float32"
    low: list[float | None] = Field(description="Per-element lower bound; None = unbounded")
    high: list[float | None] = Field(description="Per-element upper bound; None = unbounded")

    @model_validator(mode="after")
    def _lengths_match(self) -> TensorSchema:
        for field in ("names", "low", "high"):
            if len(getattr(self, field)) != self.dim:
                raise ValueError(f"{field} has {len(getattr(self, field))} entries, dim is {self.dim}")
        return self


class GateSpec(BaseModel):
    """Advantage gate: raw action when gate_advantage > threshold; once raw, stay while > threshold - hysteresis."""

    model_config = ConfigDict(extra="forbid")
    threshold: float
    hysteresis: float = Field(ge=0)
    controller: Controller = Field(
        "gated", description="what the run's own evaluation executed, so the bundle serves the controller that was "
                             "scored: gated (SPAARS after its switch: the gate decides), raw (the raw policy alone: "
                             "IQL, SPAR, BC, TD3+BC, raw fine-tuning, a hard switch), latent (the latent controller "
                             "alone: latent-only, SUPE, SPAARS before its switch). The support monitor still vetoes "
                             "an out-of-support raw action under gated and raw")
    form: Literal["critic_lcb", "rollout_neighbours"] = Field(
        "critic_lcb", description="what gate_advantage is: the critic ensemble's LCB (relative to the gate scale), or "
                                  "a gate fitted to branched simulator rollouts (`spaars-robot gate fit`)")
    hold_steps: int = Field(1, ge=1, description="the gate is asked at steps 0, N, 2N, ... of an episode and its "
                                                 "answer held in between (a rollout gate fitted with --hold-steps N); "
                                                 "the support monitor still checks every step")
    fit: dict | None = Field(None, description="rollout_neighbours: its fit record (states, repeats, the choice and "
                                               "every candidate's cross-validated gain, constants included)")

    @model_validator(mode="before")
    @classmethod
    def _legacy_enabled(cls, data: object) -> object:
        """Bundles written before `controller` said `enabled: false` for a skill decoder alone; they stay loadable."""
        if isinstance(data, dict) and "enabled" in data and "controller" not in data:
            enabled = data["enabled"]
            if not isinstance(enabled, bool):
                raise ValueError(f"gate.enabled must be true or false, not {enabled!r}")
            data = {key: value for key, value in data.items() if key != "enabled"}
            data["controller"] = "gated" if enabled else "latent"
        return data


class SkillSpec(BaseModel):
    """A skill policy (SUPE, SPAARS-SUPE): a skill z is chosen every `horizon` steps and held in between.

    The graph takes the skill in force (`skill` [B, dim]) and whether to choose a new one now (`choose_skill` [B],
    1 or 0); it returns the skill it used (`skill_out`), which the runtime keeps per client and feeds back, and
    the decoder's action under it as `latent_action`. The server's clock restarts at every episode `reset`.
    """

    model_config = ConfigDict(extra="forbid")
    dim: int = Field(gt=0)
    horizon: int = Field(gt=0)
    input_name: str = SKILL_INPUT
    choose_name: str = CHOOSE_INPUT
    output_name: str = SKILL_OUTPUT


class SupportSpec(BaseModel):
    """Support monitor: a raw action whose support_score exceeds threshold is replaced by the latent action.

    Leaving the fallback needs the score back under threshold - hysteresis, so a score hovering at the
    threshold does not make the robot chatter between two policies.
    """

    model_config = ConfigDict(extra="forbid")
    threshold: float
    hysteresis: float = Field(ge=0)
    calibration: SupportCalibration


class GraphSpec(BaseModel):
    """The ONNX graph: one fused graph, input `obs` [B, obs_dim] float32, four outputs."""

    model_config = ConfigDict(extra="forbid")
    file: str
    opset: int = Field(ge=17)
    input_name: str = "obs"
    output_names: list[str] = list(OUTPUT_NAMES)


class TrainingProvenance(BaseModel):
    """Where the networks came from: enough to retrain the same bundle."""

    model_config = ConfigDict(extra="forbid")
    run_dir: str
    algo: str
    seed: int
    train_command: str
    config: dict


class ParityReport(BaseModel):
    """Max |onnxruntime - torch| per output, measured at export on recorded and random observations.

    `gate_advantage`'s error is in units of the mean |Q| (onnx_export.measure_parity says why).
    """

    model_config = ConfigDict(extra="forbid")
    atol: float
    recorded_obs: int
    random_obs: int
    max_abs_error: dict[str, float]


class SafetyValidation(BaseModel):
    """Which safety spec the bundle was checked against at export (robot name + SHA-256 of the YAML file).

    The server refuses to start with a spec whose bytes differ, so limits cannot change under a
    deployed policy without someone re-exporting (or explicitly overriding) and thereby reviewing them.
    """

    model_config = ConfigDict(extra="forbid")
    robot: str
    spec_file: str = Field(description="File name the spec was read from, e.g. hopper.yaml (informative)")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class BundleManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: int = BUNDLE_FORMAT_VERSION
    task: str
    control_rate_hz: float = Field(gt=0)
    observation: TensorSchema
    action: TensorSchema
    gate: GateSpec
    support: SupportSpec
    graph: GraphSpec
    training: TrainingProvenance
    parity: ParityReport
    safety: SafetyValidation | None = Field(default=None, description="Safety spec validated at export")
    skills: SkillSpec | None = Field(default=None, description="Set for skill policies (SUPE, SPAARS-SUPE)")
    files: dict[str, str] = Field(description="Relative path -> SHA-256 of every file except manifest.json")

    def metadata_props(self) -> dict[str, str]:
        """The key facts as ONNX metadata (strings only); written into the graph and checked at load."""
        return {
            "spaars.bundle_format_version": str(self.format_version),
            "spaars.task": self.task,
            "spaars.control_rate_hz": repr(self.control_rate_hz),
            "spaars.obs_dim": str(self.observation.dim),
            "spaars.action_dim": str(self.action.dim),
            "spaars.observation_names": ",".join(self.observation.names),
            "spaars.action_names": ",".join(self.action.names),
            "spaars.output_names": ",".join(self.graph.output_names),
            "spaars.gate_threshold": repr(self.gate.threshold),
            "spaars.gate_hysteresis": repr(self.gate.hysteresis),
            "spaars.support_threshold": repr(self.support.threshold),
            "spaars.support_hysteresis": repr(self.support.hysteresis),
            "spaars.support_calibration": self.support.calibration.model_dump_json(),
            "spaars.run_dir": self.training.run_dir,
            "spaars.train_command": self.training.train_command,
            # Bundles exported before the safety record existed carry no such keys; keep them loadable.
            **({"spaars.safety_robot": self.safety.robot, "spaars.safety_sha256": self.safety.sha256}
               if self.safety is not None else {}),
            **({"spaars.controller": self.gate.controller} if self.gate.controller != "gated" else {}),
            **({"spaars.skill_dim": str(self.skills.dim), "spaars.skill_horizon": str(self.skills.horizon)}
               if self.skills is not None else {}),
        }
