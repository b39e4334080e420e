"""The safety spec of one robot: `safety/<robot>.yaml`, validated here before anything moves.

Limits follow the deployment anchors (`../shared/research/anchors_deploy.md`, section C):
- hard bounds are the actuator range *minus a margin* (Polymetis `franka_hardware.yaml`), so a
  command never sits exactly on the vendor limit;
- a soft zone inside the hard bound pushes actions back towards the centre like Polymetis's
  virtual-spring safety controller, so the hard clamp is rarely the thing that acts;
- per-step rate limits (and acceleration / jerk for position or velocity commands) as in libfranka's
  `rate_limiting.h`;
- a watchdog with the anchor timings: hold after a missed deadline, damp after 3 missed periods,
  safe stop after 100 ms without a fresh reply (MoveIt Servo's halt timeout).

All rate-type limits are in action units *per control step* (per step^2, per step^3), so a spec does
not silently change meaning when the control rate changes without a review of the limits.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from spaars_robot.config.loading import data_root, load_yaml_model
from spaars_robot.errors import ConfigError, SafetySpecMismatch

PerDim = float | list[float]


def _vector(value: PerDim | None, dim: int, what: str) -> np.ndarray | None:
    """Broadcast a scalar or check a per-dimension list; `what` names the field in the error."""
    if value is None:
        return None
    if isinstance(value, list):
        if len(value) != dim:
            raise ValueError(f"{what} has {len(value)} entries but action/observation dim is {dim}")
        return np.asarray(value, dtype=np.float64)
    return np.full(dim, float(value), dtype=np.float64)


class JointSoftLimits(BaseModel):
    """Soft position limits of torque-commanded joints (ros_control's soft limits for effort joints).

    One entry per action dimension, each the joint that dimension drives; the bound it implies is computed in
    `safety/joint_limits.py` from the joint's position and velocity, read from the observation at the given
    indices, in the observation's own units (rad and rad/s for a hinge). `lower`/`upper` belong inside the
    joint's physical range, so the joint is slowed before its hard stop.
    """

    model_config = ConfigDict(extra="forbid")
    position_index: list[int] = Field(description="Observation index of each action dim's joint position.")
    velocity_index: list[int] = Field(description="Observation index of each action dim's joint velocity.")
    lower: PerDim = Field(description="Soft lower position limit, scalar or one per dim.")
    upper: PerDim = Field(description="Soft upper position limit, scalar or one per dim.")
    k_position: PerDim = Field(description="Velocity allowed towards a limit per unit of distance to it (1/s).")
    k_velocity: PerDim = Field(description="Braking effort per unit of velocity beyond the allowed one "
                               "(action units per velocity unit).")
    max_velocity: PerDim = Field(description="Velocity bound far from the limits (velocity units).")

    def vector(self, name: str, dim: int) -> np.ndarray:
        return _vector(getattr(self, name), dim, f"joint_limits.{name}")  # type: ignore[return-value]

    def highest_index(self) -> int:
        """The largest observation index read: an observation needs more entries than this."""
        return max(self.position_index + self.velocity_index)

    def check(self, dim: int) -> None:
        """Shapes and signs against the action dim (the model alone does not know it)."""
        for name in ("position_index", "velocity_index"):
            indices = getattr(self, name)
            if len(indices) != dim:
                raise ValueError(f"joint_limits.{name} has {len(indices)} entries but action dim is {dim}")
            if any(i < 0 for i in indices):
                raise ValueError(f"joint_limits.{name} must hold observation indices >= 0")
        if (self.vector("lower", dim) >= self.vector("upper", dim)).any():
            raise ValueError("joint_limits.lower must be below joint_limits.upper for every dim")
        for name in ("k_position", "k_velocity", "max_velocity"):
            if (self.vector(name, dim) <= 0).any():
                raise ValueError(f"joint_limits.{name} must be > 0")


class ActionLimits(BaseModel):
    """Where and how fast the commanded action may go."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["torque", "position", "velocity"] = Field(
        description="What the action commands. Acceleration/jerk limits only make sense for position or "
        "velocity commands (a torque step is already an acceleration step)."
    )
    dim: int = Field(gt=0, description="Number of action dimensions; must equal the bundle's action dim.")
    names: list[str] | None = Field(default=None, description="Optional joint/actuator names, one per dim.")
    low: PerDim = Field(description="Actuator lower range (action units), scalar or one per dim.")
    high: PerDim = Field(description="Actuator upper range (action units), scalar or one per dim.")
    margin: PerDim = Field(default=0.0, description="Hard bound = [low + margin, high - margin]; >= 0.")
    soft_zone: PerDim = Field(
        default=0.0, description="Width inside the hard bound where the push-back acts (action units); 0 = off."
    )
    soft_stiffness: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="Share of the penetration into the soft zone that is pushed back (0 = none, 1 = stop "
        "at the soft-zone edge).",
    )
    rate_limit: PerDim | None = Field(default=None, description="Max |a_t - a_{t-1}| per step; None = off.")
    accel_limit: PerDim | None = Field(default=None, description="Max |second difference| per step^2.")
    jerk_limit: PerDim | None = Field(default=None, description="Max |third difference| per step^3.")
    joint_limits: JointSoftLimits | None = Field(
        default=None, description="Torque commands only: effort bounded by each joint's position and velocity "
        "near its soft position limits (ros_control's soft limits); None = off."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ActionLimits:
        low, high = _vector(self.low, self.dim, "low"), _vector(self.high, self.dim, "high")
        margin = _vector(self.margin, self.dim, "margin")
        soft = _vector(self.soft_zone, self.dim, "soft_zone")
        if self.names is not None and len(self.names) != self.dim:
            raise ValueError(f"names has {len(self.names)} entries but dim is {self.dim}")
        if (margin < 0).any() or (soft < 0).any():
            raise ValueError("margin and soft_zone must be >= 0")
        hard_low, hard_high = low + margin, high - margin
        if (hard_low >= hard_high).any():
            raise ValueError("low + margin must be below high - margin for every dim")
        if (2 * soft > hard_high - hard_low).any():
            raise ValueError("soft_zone must be at most half of the hard range (high - low - 2*margin)")
        for name in ("rate_limit", "accel_limit", "jerk_limit"):
            vec = _vector(getattr(self, name), self.dim, name)
            if vec is not None and (vec <= 0).any():
                raise ValueError(f"{name} must be > 0 (use null to switch it off)")
        if self.kind == "torque" and (self.accel_limit is not None or self.jerk_limit is not None):
            raise ValueError("accel_limit/jerk_limit apply to position or velocity actions, not torque")
        if self.jerk_limit is not None and self.accel_limit is None:
            raise ValueError("jerk_limit needs accel_limit (libfranka limits jerk -> accel -> rate in that order)")
        if self.accel_limit is not None and self.rate_limit is None:
            raise ValueError("accel_limit needs rate_limit")
        if self.joint_limits is not None:
            if self.kind != "torque":
                raise ValueError("joint_limits bound torque commands (a position command is bounded directly)")
            if not ((hard_low < 0) & (hard_high > 0)).all():
                raise ValueError("joint_limits need a hard torque range around 0 (a passive joint gets zero torque)")
            self.joint_limits.check(self.dim)
        return self

    def hard_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        margin = _vector(self.margin, self.dim, "margin")
        return _vector(self.low, self.dim, "low") + margin, _vector(self.high, self.dim, "high") - margin

    def vector(self, name: str) -> np.ndarray | None:
        """A per-dim float64 array for one of the per-dim fields (None when switched off)."""
        return _vector(getattr(self, name), self.dim, name)


class ObservationBounds(BaseModel):
    """Beyond these the observation is out of distribution: the sensor, not the policy, is suspect."""

    model_config = ConfigDict(extra="forbid")
    dim: int = Field(gt=0)
    low: PerDim
    high: PerDim
    on_out_of_bounds: Literal["flag", "hold", "zero"] = Field(
        default="flag",
        description="flag: count and report only; hold: answer the last safe action; zero: answer zeros.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ObservationBounds:
        if (_vector(self.low, self.dim, "low") >= _vector(self.high, self.dim, "high")).any():
            raise ValueError("observation low must be below high for every dim")
        return self


class WatchdogSpec(BaseModel):
    """Client-side timings (unitree_rl_lab timeout -> Passive; MoveIt Servo 100 ms halt)."""

    model_config = ConfigDict(extra="forbid")
    deadline_s: float | None = Field(
        default=None, gt=0, description="A reply older than this is never applied; None = one control period."
    )
    hold_source: Literal["last_safe", "latent"] = Field(
        default="last_safe", description="What HOLD applies: the last safe action or the latent fallback action."
    )
    damp_after_missed: int = Field(default=3, ge=1, description="Consecutive missed periods before DAMP.")
    damp_mode: Literal["damp", "zero"] = Field(default="damp", description="DAMP decays the held action or zeros it.")
    damp_factor: float = Field(default=0.5, ge=0.0, lt=1.0, description="Per-period decay of the action in DAMP.")
    safe_stop_after_s: float = Field(default=0.1, gt=0, description="No fresh reply for this long -> SAFE_STOP.")


class SafetySpec(BaseModel):
    """Everything the runtime enforces for one robot; the bundle manifest records which spec it passed."""

    model_config = ConfigDict(extra="forbid")
    robot: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    action: ActionLimits
    nonfinite: Literal["hold_last", "zero", "reject"] = Field(
        default="hold_last",
        description="A NaN/inf action: hold the last safe action, answer zeros, or reject the request.",
    )
    observation: ObservationBounds | None = None
    watchdog: WatchdogSpec = WatchdogSpec()

    def check_action_space(self, action_dim: int, source: str = "bundle") -> None:
        """Refuse to start when the spec and the policy disagree on the action space."""
        if action_dim != self.action.dim:
            raise SafetySpecMismatch(
                f"safety spec {self.robot!r} is for action dim {self.action.dim}, but the {source} "
                f"has action dim {action_dim}; use the spec written for this robot"
            )

    def check_action_names(self, names: list[str], source: str = "bundle") -> None:
        """Refuse a spec that names its actions differently from the policy's (a swapped joint order)."""
        if self.action.names is not None and self.action.names != names:
            raise SafetySpecMismatch(f"safety spec {self.robot!r} names actions {self.action.names}, the {source} "
                                     f"{names}")

    def check_action_range(self, low: np.ndarray, high: np.ndarray, source: str = "bundle") -> None:
        """Refuse a spec whose hard bounds allow actions outside the policy's range (they would never be limits)."""
        hard_low, hard_high = self.action.hard_bounds()
        if (hard_low < low - 1e-9).any() or (hard_high > high + 1e-9).any():
            raise SafetySpecMismatch(f"safety spec {self.robot!r} allows actions in [{hard_low.min():g}, "
                                     f"{hard_high.max():g}], outside the {source}'s action range [{low.min():g}, "
                                     f"{high.max():g}]")

    def check_observation_space(self, obs_dim: int, source: str = "bundle") -> None:
        if self.observation is not None and obs_dim != self.observation.dim:
            raise SafetySpecMismatch(
                f"safety spec {self.robot!r} bounds {self.observation.dim} observation dims, but the "
                f"{source} has observation dim {obs_dim}"
            )
        joints = self.action.joint_limits
        if joints is not None and joints.highest_index() >= obs_dim:
            raise SafetySpecMismatch(
                f"safety spec {self.robot!r} reads joint state at observation index {joints.highest_index()}, "
                f"but the {source} has observation dim {obs_dim}"
            )

    @model_validator(mode="after")
    def _joint_state_observed(self) -> SafetySpec:
        """Joint limits read the observation: with bounds on it, its indices must exist there."""
        joints = self.action.joint_limits
        if self.observation is not None and joints is not None and joints.highest_index() >= self.observation.dim:
            raise ValueError(f"joint_limits read observation index {joints.highest_index()}, but observation.dim "
                             f"is {self.observation.dim}")
        return self


def safety_dir() -> Path:
    return data_root() / "safety"


def load_safety_spec(name_or_path: str | Path) -> SafetySpec:
    """`load_safety_spec("hopper")` reads `safety/hopper.yaml`; a path with .yaml is read as given."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = safety_dir() / f"{name_or_path}.yaml"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in safety_dir().glob("*.yaml")))
            raise ConfigError(f"no safety spec {name_or_path!r}; known specs: {known} (looked in {safety_dir()})")
    return load_yaml_model(path, SafetySpec)
