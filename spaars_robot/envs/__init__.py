"""Environment construction: one `make_env(task)` for gymnasium MuJoCo and dm-control tasks."""
from spaars_robot.envs.make import env_spec, make_env

__all__ = ["env_spec", "make_env"]
