"""Load YAML into pydantic models with errors that name the file, the field path and the expectation."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from spaars_robot.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)


DATA_ROOT_ENV = "SPAARS_ROOT"
# What marks a data root: the task definitions every command starts from.
_MARKER = Path("sim") / "tasks"
# Where a built wheel puts the checkout's `sim/`, `safety/`, `policies/hopper-default` and `deploy/`
# (setup.py copies them at build time: the checkout stays their single source).
PACKAGED_ROOT = Path(__file__).resolve().parents[1] / "_root"
CHECKOUT_ROOT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """Where `sim/`, `safety/` and `policies/` are read from, so the same code runs from a checkout and a wheel.

    Resolution order: `$SPAARS_ROOT` when set (a robot's own tasks and specs), else the checkout this
    module sits in (editable install, running from source), else the copy shipped inside the installed
    package. A root that does not exist is one error naming every place that was tried.
    """
    override = os.environ.get(DATA_ROOT_ENV)
    if override:
        root = Path(override).expanduser()
        if not root.is_dir():
            raise ConfigError(f"${DATA_ROOT_ENV}={override} is not a directory; it must hold sim/tasks/, "
                              "safety/ and policies/ (unset it to use the files shipped with the package)")
        return root
    for root in (CHECKOUT_ROOT, PACKAGED_ROOT):
        if (root / _MARKER).is_dir():
            return root
    raise ConfigError(f"no data root with {_MARKER}/: looked in the checkout ({CHECKOUT_ROOT}) and in the "
                      f"installed package ({PACKAGED_ROOT}); set ${DATA_ROOT_ENV} to a directory holding "
                      "sim/, safety/ and policies/, or reinstall the package from a built wheel")


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
