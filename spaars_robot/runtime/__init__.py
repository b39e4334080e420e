"""The onboard runtime: action server, client and simulated robot, sharing one wire protocol."""
from spaars_robot.runtime.client import Client, DeadlineMissed, ServerUnavailable

__all__ = ["Client", "DeadlineMissed", "ServerUnavailable"]
