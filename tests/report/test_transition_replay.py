"""`transition replay` decides a candidate rule on logged rows exactly as the monitor would have in training."""
from __future__ import annotations

import pytest

from spaars_robot.config.training import TransitionConfig
from spaars_robot.errors import SpaarsError
from spaars_robot.report.transition_replay import CheckRow, parse_sets, replay, with_overrides

RELATIVE = TransitionConfig(t_min=20, t_max=80, window=4)


def rows(returns: list[float], novelty: float = 1e-4, bc: float = 0.05, gate: float = 0.1) -> list[CheckRow]:
    """Evaluations every 10 steps from 0; novelty starts at 1.0 and has decayed to `novelty` after."""
    return [CheckRow(10 * i, "latent", r, 1.0 if i == 0 else novelty, bc, gate, "") for i, r in enumerate(returns)]


def test_evidence_rule_fires_on_a_noisy_plateau_where_the_relative_rule_waits_for_the_cap():
    plateau = rows([1000, 1200, 1400, 1600, 1620, 1580, 1610, 1590, 1600])  # rises to 30, flat from 40
    assert replay(plateau, RELATIVE).step == 80 and "hard cap" in replay(plateau, RELATIVE).reason
    evidence = with_overrides(RELATIVE, {"rule": "evidence"})
    decision = replay(plateau, evidence)
    assert decision.step == 50 and decision.reason.startswith("plateau and calibration")
    assert [s for s, _ in decision.checks] == [0, 10, 20, 30, 40, 50]
    assert "return slope t +inf" in decision.checks[3][1]  # still rising on a straight line: no switch


def test_a_rule_that_has_not_fired_when_the_rows_end_says_how_far_it_was_replayed():
    rising = rows([1000 + 100 * i for i in range(6)])
    decision = replay(rising, with_overrides(RELATIVE, {"rule": "evidence"}))
    assert decision.step is None and decision.last_step == 50 and "return slope" in decision.reason


def test_overrides_are_validated_like_the_config_file():
    assert with_overrides(RELATIVE, parse_sets(["t_max=40", "significance=0.1"])).t_max == 40
    with pytest.raises(SpaarsError, match="unknown transition field"):
        with_overrides(RELATIVE, parse_sets(["gate_kappa=1"]))
    with pytest.raises(SpaarsError, match="significance"):
        with_overrides(RELATIVE, parse_sets(["significance=0.7"]))
    assert parse_sets(["online.transition.rule=evidence", "t_min = 5"]) == {"rule": "evidence", "t_min": 5}
    with pytest.raises(SpaarsError, match="expected key.path=value"):
        parse_sets(["rule"])
    with pytest.raises(SpaarsError, match="not valid YAML"):  # a value YAML cannot parse is one line, not a crash
        parse_sets(["rule=["])
