"""D4RL score normalisation against the reference constants of `d4rl/infos.py` (Fu et al. 2020)."""

from __future__ import annotations

import pytest

from spaars_robot.config.tasks import load_task

# (task, REF_MIN_SCORE, REF_MAX_SCORE) exactly as in d4rl/infos.py for the v2 locomotion datasets.
D4RL_REFERENCES = [
    ("hopper", -20.272305, 3234.3),
    ("walker2d", 1.629008, 4592.3),
    ("halfcheetah", -280.178953, 12135.0),
    ("ant", -325.6, 3879.7),
]


@pytest.mark.parametrize(("name", "ref_min", "ref_max"), D4RL_REFERENCES)
def test_reference_scores_are_d4rl_constants(name: str, ref_min: float, ref_max: float) -> None:
    task = load_task(name)
    assert (task.ref_min_score, task.ref_max_score) == (ref_min, ref_max)
    assert task.normalized_score(ref_min) == pytest.approx(0.0, abs=1e-12)
    assert task.normalized_score(ref_max) == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("name", "episode_return", "expected"),
    [
        # 100 * (R - min) / (max - min), worked out independently of the code under test
        ("hopper", 1000.0, 31.348890),  # 1020.272305 / 3254.572305
        ("hopper", 3234.3 * 2, 199.377113),  # above expert is > 100
        ("walker2d", 3000.0, 65.314439),  # 2998.370992 / 4590.670992
        ("halfcheetah", 4800.0, 40.919096),  # 5080.178953 / 12415.178953
        ("ant", -1000.0, -16.036906),  # below random is negative: -674.4 / 4205.3
    ],
)
def test_normalized_score_values(name: str, episode_return: float, expected: float) -> None:
    assert load_task(name).normalized_score(episode_return) == pytest.approx(expected, abs=1e-5)
