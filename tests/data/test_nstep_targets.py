"""n-step TD pieces (`data/replay.nstep_targets`) against a plain Python walk over hand-built episodes.

The buffer holds, in order: an episode that terminates after 3 steps, one cut by a time limit after 2 steps, and
a dataset-style boundary (no flag at all: the next row's obs does not continue this row's next_obs) after 4 steps.
"""
from __future__ import annotations

import pytest
import torch

from spaars_robot.data.replay import ReplayBuffer, mixed_batch, nstep_targets

GAMMA = 0.9


def build(capacity: int | None = None) -> tuple[ReplayBuffer, list[int], list[tuple[str, int]]]:
    """Rows with rewards 1, 2, 3, ...; obs are 1-d counters; an episode's next_obs is the following row's obs."""
    episodes = [("terminated", 3), ("truncated", 2), ("boundary", 4), ("boundary", 3)]
    rows = sum(length for _, length in episodes)
    buf = ReplayBuffer(capacity or rows, 1, 1)
    state = 0.0
    for end, length in episodes:
        state += 100.0  # a new episode starts somewhere else: its first obs continues nothing
        for t in range(length):
            last = t == length - 1
            buf.add([state + t], [0.0], float(buf.size + 1), [state + t + 1], done=last and end == "terminated",
                    truncated=last and end == "truncated")
    return buf, [length for _, length in episodes], episodes


def reference(buf: ReplayBuffer, i: int, n: int) -> tuple[float, float, float, float]:
    reward, discount = 0.0, 1.0
    j = i
    for k in range(n):
        reward += discount * float(buf.reward[j])
        discount *= GAMMA
        last = j
        if buf.done[j] or buf.truncated[j] or j + 1 >= buf.size or buf.obs[j + 1, 0] != buf.next_obs[j, 0]:
            break
        j += 1
    return reward, float(buf.next_obs[last, 0]), float(buf.done[last]), discount


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_each_row_sums_discounted_rewards_up_to_its_episode_end(n: int) -> None:
    buf, _, _ = build()
    idx = torch.arange(buf.size)
    got = nstep_targets(buf, idx, n, GAMMA)
    for i in range(buf.size):
        reward, next_obs, done, discount = reference(buf, i, n)
        assert got["nstep_reward"][i].item() == pytest.approx(reward), (i, n)
        assert got["nstep_next_obs"][i, 0].item() == next_obs, (i, n)
        assert got["nstep_done"][i].item() == done, (i, n)
        assert got["nstep_discount"][i].item() == pytest.approx(discount), (i, n)


def test_hand_computed_rows() -> None:
    buf, _, _ = build()
    got = nstep_targets(buf, torch.tensor([0, 2, 3, 5]), 3, GAMMA)
    # row 0: 1 + .9*2 + .81*3, bootstraps from the terminal state with done=1
    assert got["nstep_reward"][0].item() == pytest.approx(1 + 0.9 * 2 + 0.81 * 3)
    assert got["nstep_done"][0].item() == 1.0
    # row 2 is the terminal step: one step only
    assert got["nstep_reward"][1].item() == pytest.approx(3.0) and got["nstep_discount"][1].item() == pytest.approx(0.9)
    # row 3 -> 4 (time limit): two steps, no termination, bootstraps from the state after the limit
    assert got["nstep_reward"][2].item() == pytest.approx(4 + 0.9 * 5) and got["nstep_done"][2].item() == 0.0
    assert got["nstep_discount"][2].item() == pytest.approx(0.81)
    # row 5 starts an unflagged 4-step episode: a full 3 steps
    assert got["nstep_discount"][3].item() == pytest.approx(0.9 ** 3)


def test_a_circular_buffer_never_walks_from_its_newest_row_into_its_oldest() -> None:
    # a state cycle of period 4 in a buffer of 4: after 6 rows the oldest row's obs *does* continue the newest
    # row's next_obs, so only the buffer's own order can stop the walk there
    buf = ReplayBuffer(4, 1, 1)
    for t in range(6):
        buf.add([t % 4], [0.0], float(t), [(t + 1) % 4], done=False)
    newest, oldest = (buf.cursor - 1) % 4, buf.cursor % 4
    assert buf.obs[oldest, 0] == buf.next_obs[newest, 0]
    got = nstep_targets(buf, torch.tensor([newest, oldest]), 3, GAMMA)
    assert got["nstep_reward"][0].item() == pytest.approx(5.0) and got["nstep_discount"][0].item() == pytest.approx(GAMMA)
    # the oldest row walks forward normally: t=2, 3, then 4 (stored at position 0 after the wrap)
    assert got["nstep_reward"][1].item() == pytest.approx(2 + 0.9 * 3 + 0.81 * 4)


def test_mixed_batch_draws_the_same_rows_with_or_without_the_nstep_fields() -> None:
    buf, _, _ = build()
    plain = mixed_batch(buf, buf, 16, 0.5, torch.Generator().manual_seed(3))
    nstep = mixed_batch(buf, buf, 16, 0.5, torch.Generator().manual_seed(3), nstep=4, gamma=GAMMA)
    assert "nstep_reward" not in plain and plain["online_from"] == nstep["online_from"] == 8
    for name in ("obs", "action", "reward", "next_obs", "done"):
        assert torch.equal(plain[name], nstep[name])
    one = mixed_batch(buf, buf, 16, 0.5, torch.Generator().manual_seed(3), nstep=1, gamma=GAMMA)
    assert one.keys() == plain.keys()
