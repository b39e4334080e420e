"""Environment construction: one `make_env(task)` for gymnasium MuJoCo and dm-control tasks."""
import gymnasium as gym

from spaars_robot.envs.make import env_spec, make_env

# The project's own envs, made by `gym.make` like any other (the entry point is imported only when one is built).
if "spaars/AntGoal-v0" not in gym.registry:
    gym.register("spaars/AntGoal-v0", entry_point="spaars_robot.envs.ant_goal:AntGoalEnv")

__all__ = ["env_spec", "make_env"]
