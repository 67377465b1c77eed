"""Fixtures for the algorithm tests."""

import pytest
from tiny_policy import make_batch

from pcm_core.types import RolloutBatch


@pytest.fixture
def batch() -> RolloutBatch:
    return make_batch([6, 9, 4, 8, 9, 5], [1, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2])
