"""Build step that ships the checkout's data files inside the package (everything else is in pyproject.toml).

`sim/` (tasks, protocols), `safety/` (specs), `policies/hopper-default` (the default bundle) and `deploy/`
(Grafana dashboard, Prometheus rules) stay at the top of the repository, their single source. A wheel
gets a copy of them under `spaars_robot/_root/`, where `spaars_robot.config.loading.data_root` finds them
once the checkout is gone. An editable install copies nothing: it reads the checkout itself.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# (source in the checkout, glob of files to ship); the layout under _root mirrors the checkout's.
SHIPPED = (
    ("sim/tasks", "*.yaml"),
    ("sim/protocols", "*.yaml"),
    ("safety", "*.yaml"),
    ("policies/hopper-default", "*"),
    ("deploy/grafana", "*.json"),
    ("deploy/prometheus", "*-rules.yml"),
)


class BuildPyWithData(build_py):
    """`build_py` that also copies the SHIPPED files into `<build>/spaars_robot/_root/`."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target_root = Path(self.build_lib) / "spaars_robot" / "_root"
        shutil.rmtree(target_root, ignore_errors=True)  # a stale build/ never leaks old files into a wheel
        for folder, pattern in SHIPPED:
            files = sorted(p for p in (HERE / folder).glob(pattern) if p.is_file())
            if not files:
                raise FileNotFoundError(f"{HERE / folder}: nothing matches {pattern}; the wheel would lack it")
            for source in files:
                target = target_root / folder / source.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)


setup(cmdclass={"build_py": BuildPyWithData})
