"""Typed configuration: every YAML file the tool reads is validated by a pydantic model here."""
from spaars_robot.config.loading import data_root, load_yaml_model

__all__ = ["data_root", "load_yaml_model"]
