"""Binding a safety spec to a policy bundle: checked at export, recorded in the manifest, re-checked at serve.

A bundle is only as safe as the limits it runs under. Export validates the spec against the bundle's
action/observation space and records the spec's robot name and SHA-256 in the manifest; `serve` then
refuses a spec that does not fit the bundle or whose bytes differ from the recorded ones, so a
changed limit is always a deliberate act (re-export, or `--allow-spec-change` on the command line).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spaars_robot.errors import SafetySpecMismatch
from spaars_robot.export.manifest import BundleManifest, SafetyValidation
from spaars_robot.safety.spec import SafetySpec, load_safety_spec, safety_dir


@dataclass(frozen=True)
class BoundSpec:
    """A spec ready to serve: the parsed model, where it came from, its hash, and any override note."""

    spec: SafetySpec
    path: Path
    sha256: str
    override: str | None = None  # set when --allow-spec-change let a different spec through


def spec_path(name_or_path: str | Path) -> Path:
    """`hopper` -> safety/hopper.yaml; a .yaml path as given."""
    path = Path(name_or_path)
    return path if path.suffix in (".yaml", ".yml") else safety_dir() / f"{name_or_path}.yaml"


def spec_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_spec_fits(spec: SafetySpec, manifest: BundleManifest, source: str = "bundle") -> None:
    """Refuse a spec whose dims, names or action range disagree with the bundle's action/observation space."""
    spec.check_action_space(manifest.action.dim, source)
    spec.check_observation_space(manifest.observation.dim, source)
    spec.check_action_names(manifest.action.names, source)
    spec.check_action_range(np.array([-np.inf if v is None else v for v in manifest.action.low]),
                            np.array([np.inf if v is None else v for v in manifest.action.high]), source)


def validate_for_export(name_or_path: str | Path, manifest: BundleManifest) -> SafetyValidation:
    """Load, check against the manifest, and describe the spec for the manifest's `safety` record."""
    path = spec_path(name_or_path)
    spec = load_safety_spec(path)
    check_spec_fits(spec, manifest, "exported policy")
    return SafetyValidation(robot=spec.robot, spec_file=path.name, sha256=spec_sha256(path))


def bind_spec(manifest: BundleManifest, given: str | Path | None, allow_spec_change: bool = False) -> BoundSpec:
    """The spec `serve` runs with: the one given, else the recorded robot's, else `safety/<task>.yaml`.

    Raises SafetySpecMismatch (one line) when it does not fit the bundle, or when its SHA-256 differs
    from the one recorded at export and `allow_spec_change` is not set.
    """
    recorded = manifest.safety
    default = recorded.robot if recorded is not None else manifest.task
    path = spec_path(given if given is not None else default)
    spec = load_safety_spec(path)
    check_spec_fits(spec, manifest)
    digest = spec_sha256(path)
    override = None
    if recorded is None or recorded.sha256 != digest:
        why = ("the bundle records no safety spec" if recorded is None else
               f"the bundle was validated against {recorded.robot} ({recorded.spec_file}, sha256 "
               f"{recorded.sha256[:12]}...), {path} has sha256 {digest[:12]}...")
        if not allow_spec_change:
            raise SafetySpecMismatch(f"refusing to serve: {why}; re-export with `--safety {path}` "
                                     "or pass --allow-spec-change after reviewing the limits")
        override = why
    return BoundSpec(spec=spec, path=path, sha256=digest, override=override)
