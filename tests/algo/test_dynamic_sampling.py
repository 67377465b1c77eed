"""``train.dynamic_sampling`` (``Collector.step_batch``) and ``rollout.concat`` on hand-made batches.

A stub collector hands out scripted rollouts: call ``c`` returns ``tasks_per_step`` groups of 2
with the rewards it is given and ``T_c`` chunks; every real value of trajectory ``i`` of call ``c``
is the marker ``100 c + i + 1`` (padding is 0), so each returned row names where it came from.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pcm_core.config import load_config
from pcm_core.rollout import concat
from pcm_core.collectors import Collector
from pcm_core.types import RolloutBatch

GROUP_SIZE = 2


def scripted_batch(call: int, rewards: list[float], max_chunks: int) -> RolloutBatch:
    """``len(rewards)`` trajectories of ``max_chunks`` chunks (the last one ends a chunk early)."""
    n = len(rewards)
    lengths = torch.full((n,), max_chunks)
    lengths[-1] = max_chunks - 1
    real = torch.arange(max_chunks)[None, :] < lengths[:, None]  # [N, T]
    marker = (100 * call + torch.arange(n) + 1).float()[:, None] * real  # [N, T], 0 on padding
    return RolloutBatch(
        obs={"x": marker[..., None].repeat(1, 1, 3)},
        instructions=[f"call {call} trajectory {i}" for i in range(n)],
        actions=marker[..., None, None].repeat(1, 1, 2, 7),
        tokens=marker.long()[..., None].repeat(1, 1, 4),
        old_logprobs=-marker[..., None].repeat(1, 1, 4),
        entropy=marker.clone(),
        lengths=lengths,
        rewards=torch.tensor(rewards, dtype=torch.float32),
        group_index=torch.arange(n) // GROUP_SIZE,
        info={"phase": marker.long()},
        horizon=max_chunks,
    )


class StubEnv:
    num_tasks = 3


class StubPolicy:
    device = torch.device("cpu")


class ScriptedCollector(Collector):
    """Returns the scripted batches in order; records the calls and the batches it returned."""

    def __init__(self, script: list[tuple[list[float], int]], config) -> None:
        super().__init__(StubEnv(), StubPolicy(), config, np.random.default_rng(0), torch.Generator())
        self.script = script
        self.returned: list[RolloutBatch] = []

    def collect(self, groups, group_size, greedy=False):
        assert group_size == GROUP_SIZE and len(groups) == len(self.script[0][0]) // GROUP_SIZE
        call = len(self.returned)
        rewards, chunks = self.script[call]
        self.returned.append(scripted_batch(call, rewards, chunks))
        return self.returned[-1]


def run(script, tasks_per_step=3, dynamic=True):
    config = load_config(
        None,
        [f"train.tasks_per_step={tasks_per_step}", f"train.group_size={GROUP_SIZE}",
         f"train.dynamic_sampling={'true' if dynamic else 'false'}", "tracking.enabled=false"],
    )
    collector = ScriptedCollector(script, config)
    return collector.step_batch(), collector


def origin(batch: RolloutBatch) -> list[int]:
    """The marker of each returned trajectory (``100 call + index + 1``)."""
    return batch.entropy[:, 0].long().tolist()


def test_only_mixed_groups_are_kept_and_group_ids_stay_distinct():
    # call 0: groups (1, 1) uniform, (1, 0) mixed, (0, 0) uniform -> 1 group; call 1: 2 mixed -> 3 in all
    batch, collector = run([([1, 1, 1, 0, 0, 0], 3), ([0, 1, 0, 0, 1, 0], 5)])
    assert len(collector.returned) == 2
    assert origin(batch) == [3, 4, 101, 102, 105, 106]
    assert batch.rewards.tolist() == [1, 0, 0, 1, 1, 0]
    # group ids: call 0's {1} as is, call 1's {0, 2} shifted by max id of the first kept batch + 1 = 2
    assert batch.group_index.tolist() == [1, 1, 2, 2, 4, 4]
    assert batch.instructions == ["call 0 trajectory 2", "call 0 trajectory 3", "call 1 trajectory 0",
                                  "call 1 trajectory 1", "call 1 trajectory 4", "call 1 trajectory 5"]
    # call 0's trajectories (3 chunks) are zero-padded to call 1's 5 chunks (its last trajectory has 4)
    assert batch.max_chunks == 5 and batch.horizon == 5
    assert batch.lengths.tolist() == [3, 3, 5, 5, 5, 4]
    assert batch.entropy.tolist()[:2] == [[3, 3, 3, 0, 0], [4, 4, 4, 0, 0]]
    assert batch.entropy.tolist()[-1] == [106, 106, 106, 106, 0]
    for value in (batch.obs["x"], batch.actions, batch.tokens, batch.old_logprobs, batch.info["phase"]):
        assert value.shape[:2] == (6, 5)
        assert bool((value[~batch.chunk_mask] == 0).all())  # padding is zeros, in every field
        assert bool((value[batch.chunk_mask] != 0).all())


def test_at_most_tasks_per_step_groups_first_come_first_kept():
    # 1 mixed group from call 0, then 3 from call 1: 4 > 3, so call 1's last mixed group is left out
    batch, collector = run([([1, 1, 1, 0, 0, 0], 4), ([1, 0, 0, 1, 1, 0], 4)])
    assert len(collector.returned) == 2
    assert origin(batch) == [3, 4, 101, 102, 103, 104]
    assert batch.group_index.tolist() == [1, 1, 2, 2, 3, 3]


def test_refills_at_most_three_times_and_keeps_what_it_found():
    # one mixed group in calls 1 and 3 only; after the third extra round it returns those 2 groups
    uniform = [1, 1, 0, 0, 1, 1]
    script = [(uniform, 2), ([0, 0, 0, 1, 1, 1], 3), (uniform, 4), ([0, 0, 1, 1, 1, 0], 2), (uniform, 9)]
    batch, collector = run(script)
    assert len(collector.returned) == 4  # the first collection and 3 extra rounds, never a fifth
    assert origin(batch) == [103, 104, 305, 306]
    assert batch.group_index.tolist() == [1, 1, 4, 4]  # call 3's group 2 shifted by 1 + 1
    assert batch.lengths.tolist() == [3, 3, 2, 1] and batch.max_chunks == 3


def test_no_mixed_group_returns_the_first_batch():
    uniform = [1, 1, 0, 0, 1, 1]
    batch, collector = run([(uniform, 2), (uniform, 3), (uniform, 4), (uniform, 5)])
    assert len(collector.returned) == 4
    assert batch is collector.returned[0]


@pytest.mark.parametrize("rewards", [[1, 1, 0, 0, 1, 1], [1, 0, 1, 1, 0, 0]])
def test_without_dynamic_sampling_one_collection_is_returned_as_is(rewards):
    batch, collector = run([(rewards, 3)], dynamic=False)
    assert len(collector.returned) == 1 and batch is collector.returned[0]


def test_concat_of_three_batches_renumbers_and_pads():
    a, b, c = scripted_batch(0, [1, 0], 2), scripted_batch(1, [1, 0, 0, 1], 4), scripted_batch(2, [0, 1], 3)
    b.group_index = torch.tensor([0, 0, 5, 5])  # sparse ids: the next offset is max id + 1
    a.dropped, b.dropped, c.dropped = 1, 0, 2
    a.policy_s, b.policy_s, c.policy_s = 0.25, 0.5, 1.0
    c.horizon = 7
    merged = concat([a, b, c])
    assert merged.group_index.tolist() == [0, 0, 1, 1, 6, 6, 7, 7]
    assert merged.entropy.tolist() == [
        [1, 1, 0, 0], [2, 0, 0, 0], [101, 101, 101, 101], [102, 102, 102, 102],
        [103, 103, 103, 103], [104, 104, 104, 0], [201, 201, 201, 0], [202, 202, 0, 0],
    ]
    assert merged.tokens.shape == (8, 4, 4) and merged.info["phase"].shape == (8, 4)
    assert merged.lengths.tolist() == [2, 1, 4, 4, 4, 3, 3, 2]
    assert merged.dropped == 3 and merged.horizon == 7
    assert merged.policy_s == 1.75 and merged.select_trajectories(torch.tensor([0])).policy_s == 1.75  # the policy's time of every collection
    assert merged.rewards.tolist() == [1, 0, 1, 0, 0, 1, 0, 1]
