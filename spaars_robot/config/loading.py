"""Load YAML into pydantic models with errors that name the file, the field path and the expectation."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from spaars_robot.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)


def repo_root() -> Path:
    """Where `sim/`, `safety/` and `policies/` live; `SPAARS_ROOT` overrides for installed copies."""
    env = os.environ.get("SPAARS_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[2]


def format_validation_error(path: Path | str, err: ValidationError) -> str:
    """One readable line per problem: `file: field.path: expected ...`."""
    lines = []
    for item in err.errors():
        loc = ".".join(str(part) for part in item["loc"]) or "<root>"
        got = item.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{path}: {loc}: {item['msg']}{got_text}")
    return "; ".join(lines)


def load_yaml_model(path: Path | str, model: type[ModelT]) -> ModelT:
    """Parse `path` as YAML and validate it; every failure is a ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from exc
