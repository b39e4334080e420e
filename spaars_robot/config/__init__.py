"""Typed configuration: every YAML file the tool reads is validated by a pydantic model here."""
from spaars_robot.config.loading import load_yaml_model, repo_root

__all__ = ["load_yaml_model", "repo_root"]
