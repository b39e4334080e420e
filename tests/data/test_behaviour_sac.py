"""A short SAC run on real MuJoCo Hopper really learns: the behaviour-policy trainer of `data collect` works.

Uniform-random actions score about 15 on Hopper, but standing still (zero torque) scores about 210,
and an untrained actor outputs small, nearly constant actions (measured 15 to 52 on two seeds). So
"beats random" alone could pass with no learning at all; the test also requires a clear gain over the
*same* network before training, on the same evaluation seeds. Budget: 12k env steps (2k uniform
warm-up, 10k updates). Measured with seed 3: 233 after training (untrained 15, random 14); with the
actor's gradient sign flipped or its learning rate at 0 the test fails.

~4 minutes on 2 cores, so it is a `learning` test: `make test-learning` runs it, `make test` does not; the
seconds-long tests/train/test_sac_update.py catches the same broken updates in the default suite.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spaars_robot.algos.sac import SAC
from spaars_robot.config.tasks import load_task
from spaars_robot.envs.evaluation import run_episodes
from spaars_robot.train.collect import BehaviourRun, CollectConfig

BUDGET, WARMUP, EVAL_EPISODES, EVAL_SEEDS = 12_000, 2_000, 5, 424_242


def deterministic_returns(sac: SAC) -> np.ndarray:
    task = load_task("hopper")
    return np.array(
        run_episodes(sac.act, task, EVAL_EPISODES, EVAL_SEEDS)[0]
    )


@pytest.mark.learning
def test_short_sac_run_beats_random_and_its_own_start(tmp_path) -> None:
    task = load_task("hopper")
    threads = torch.get_num_threads()
    # one thread: on a busy 2-core machine two torch threads wait on each other and run ~10x slower
    torch.set_num_threads(1)
    try:
        config = CollectConfig(
            steps=1,
            seed=3,
            train_budget=BUDGET,
            random_steps=WARMUP,
            eval_every=BUDGET,
            eval_episodes=1,
            checkpoint_every=BUDGET,
        )
        run = BehaviourRun(tmp_path, task, config, progress=None)
        untrained = deterministic_returns(run.sac)
        run.train_until("expert")
        trained = deterministic_returns(run.sac)
    finally:
        torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    uniform = np.array(
        run_episodes(
            lambda o: ((torch.rand(task.action_dim, generator=generator) * 2 - 1).numpy(), "raw"),
            task,
            EVAL_EPISODES,
            EVAL_SEEDS,
        )[0]
    )
    report = (
        f"SAC {trained.mean():.0f}, untrained {untrained.mean():.0f}, uniform random {uniform.mean():.0f}"
    )
    assert run.step == BUDGET
    assert trained.mean() > 5 * max(uniform.mean(), 1.0), report
    assert trained.mean() > untrained.mean() + 60, report
