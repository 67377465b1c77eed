"""Distributed setups that cannot work fail with one clear error instead of a crash deep inside
torch: a rank with no GPU of its own, and a rank whose sampler kept no chunk."""

from __future__ import annotations

import pytest
import torch
from tiny_policy import make_batch

from pcm_core.algo.pcm import balanced_parts, compact
from pcm_core.config import DistributedConfig
from pcm_core.distributed import DistributedError, setup
from pcm_core.types import Selection


def test_a_rank_beyond_the_visible_gpus_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DistributedError, match=r"rank 3 on this machine has no GPU: only 2 are visible.\nFix: --nproc 2"):
        setup(DistributedConfig(), torch.device("cuda"))


def test_a_rank_with_no_kept_chunk_is_one_clear_error():
    batch = make_batch([3, 4], [1.0, 0.0], [0, 0])
    nothing = Selection(keep=torch.zeros(2, 4, dtype=torch.bool), inclusion_prob=torch.zeros(2, 4, dtype=torch.float64))
    empty = compact(batch, nothing, torch.tensor([1.0, -1.0]), torch.zeros(0))
    assert len(empty) == 0
    with pytest.raises(ValueError, match="kept no chunk"):
        balanced_parts(empty, num_parts=2)
    assert balanced_parts(empty, num_parts=0) == []  # no rank kept a chunk: nothing to run
