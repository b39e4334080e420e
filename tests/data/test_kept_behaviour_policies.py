"""The behaviour actors shipped under policies/behaviour are what policies/behaviour/README.md says they are."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spaars_robot.config.tasks import load_task
from spaars_robot.train.collect import CollectConfig, kept_actor

KEPT = Path(__file__).resolve().parents[2] / "policies" / "behaviour"


@pytest.mark.parametrize("task_name,sha256", [("hopper", "e00ee6ed"), ("walker2d", "27a37b3c")])
def test_each_kept_actor_is_a_medium_behaviour_policy_of_its_task(task_name: str, sha256: str) -> None:
    task = load_task(task_name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, facts = kept_actor(task, KEPT / f"{task_name}-medium-seed0.pt", CollectConfig(steps=1, seed=0))
    finally:
        torch.set_num_threads(threads)
    low, high = task.quality["medium"].band
    assert low <= facts["spaars_behaviour_eval_normalized"] <= high
    assert facts["spaars_behaviour_sha256"].startswith(sha256)
