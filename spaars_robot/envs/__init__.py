"""Environment construction: one `make_env(task)` for gymnasium MuJoCo and dm-control tasks."""
from spaars_robot.envs.make import make_env

__all__ = ["make_env"]
