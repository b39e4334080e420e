"""The behaviour actors shipped under policies/behaviour are what policies/behaviour/README.md says they are."""
from __future__ import annotations

from pathlib import Path

import torch

from spaars_robot.config.tasks import load_task
from spaars_robot.train.collect import CollectConfig, kept_actor

KEPT = Path(__file__).resolve().parents[2] / "policies" / "behaviour"


def test_the_kept_hopper_actor_is_a_medium_behaviour_policy() -> None:
    task = load_task("hopper")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, facts = kept_actor(task, KEPT / "hopper-medium-seed0.pt", CollectConfig(steps=1, seed=0))
    finally:
        torch.set_num_threads(threads)
    low, high = task.quality["medium"].band
    assert low <= facts["spaars_behaviour_eval_normalized"] <= high
    assert facts["spaars_behaviour_sha256"].startswith("e00ee6ed")
