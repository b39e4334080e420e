"""The training view: qlearning transitions (timeouts are not terminals) and in-episode H-step chunks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spaars_robot.config.tasks import TaskSpec
from spaars_robot.data.dataset import OfflineDataset
from spaars_robot.data.episodes import Episode, write_dataset


@pytest.fixture
def episodes(short_hopper: TaskSpec, hopper_rollout) -> list[Episode]:
    eps = hopper_rollout(short_hopper, 300, 9)
    assert any(e.terminations[-1] for e in eps) and any(e.truncations[-1] for e in eps)
    return eps


def test_transitions_follow_qlearning_semantics(episodes: list[Episode], tmp_path) -> None:
    path = write_dataset(
        tmp_path / "spaars" / "q-v0",
        episodes,
        dataset_id="spaars/q-v0",
        obs_dim=11,
        action_dim=3,
        env_id=None,
        ref_min_score=None,
        ref_max_score=None,
    )
    data = OfflineDataset.load(path)
    assert len(data) == sum(len(e) for e in episodes)
    for ep, start in zip(episodes, data.episode_start):
        sl = slice(int(start), int(start) + len(ep))
        np.testing.assert_array_equal(data.obs[sl].numpy(), ep.observations[:-1])
        np.testing.assert_array_equal(data.next_obs[sl].numpy(), ep.observations[1:])
        np.testing.assert_array_equal(data.action[sl].numpy(), ep.actions)
        np.testing.assert_array_equal(data.reward[sl].numpy(), ep.rewards)
        # done is the termination only: a timeout keeps bootstrapping from the stored final observation
        np.testing.assert_array_equal(data.done[sl].numpy(), ep.terminations.astype(np.float32))
    timeout_ends = [int(s) + len(e) - 1 for e, s in zip(episodes, data.episode_start) if e.truncations[-1]]
    assert timeout_ends and (data.done[timeout_ends] == 0).all()
    np.testing.assert_allclose(data.episode_return, [e.episode_return for e in episodes], rtol=1e-6)


@pytest.mark.parametrize("horizon", [1, 5, 30, 31])
def test_chunks_never_cross_episode_boundaries(episodes: list[Episode], horizon: int) -> None:
    data = OfflineDataset.from_episodes(episodes)
    starts = data.chunk_starts(horizon)
    expected = sum(max(0, len(e) - horizon + 1) for e in episodes)
    assert len(starts) == expected
    episode_of = np.repeat(np.arange(len(episodes)), data.episode_length)
    if expected == 0:
        return
    idx = (starts.unsqueeze(1) + torch.arange(horizon)).numpy()
    assert (episode_of[idx] == episode_of[idx[:, :1]]).all()
    chunks = data.chunks(starts, horizon)
    assert chunks["obs"].shape == (expected, horizon, 11) and chunks["action"].shape == (expected, horizon, 3)
    # a chunk is a contiguous piece of one episode: each step's next_obs is the next step's obs
    np.testing.assert_array_equal(chunks["next_obs"][:, :-1].numpy(), chunks["obs"][:, 1:].numpy())
    # only an episode's last step can be terminal
    assert (chunks["done"][:, :-1] == 0).all()
    first = episodes[int(episode_of[int(starts[0])])]
    np.testing.assert_array_equal(chunks["action"][0].numpy(), first.actions[:horizon])
