"""One module per stage of the pipeline; each adds its commands to `app` on import (order: app.PIPELINE)."""
import importlib

MODULES = ("data", "train", "gate", "transition", "sweep", "report", "runtime", "safety", "record")


def register_all() -> None:
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
