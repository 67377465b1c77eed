"""The learner hands the sampler each trajectory's budget B_i (pcm.budget_scaling)."""

import pytest
import torch
from tiny_policy import TinyBackend, make_batch

from pcm_core.config import PCMConfig, TrainConfig
from pcm_core.learner import Learner
from pcm_phases.proxies import SuccessFailureProxy
from pcm_phases.samplers import PCMSampler
from pcm_phases.segmenters import GripperSegmenter


@pytest.mark.parametrize(("scaling", "kept"), [("fixed", [4, 2, 4, 4]), ("length", [4, 1, 2, 4])])
def test_kept_chunks_per_trajectory(scaling, kept):
    learner = Learner(
        TinyBackend(),
        GripperSegmenter(GripperSegmenter.Options(num_phases=2)),
        SuccessFailureProxy(SuccessFailureProxy.Options()),
        PCMSampler(PCMSampler.Options()),
        PCMConfig(budget=4, budget_scaling=scaling),
        TrainConfig(),
    )
    # padded T = 8: length scaling keeps round(4 T_i / 8) = 4, 1 (of 2), 2 (of 4), 4
    result = learner.select(make_batch([8, 2, 4, 8], [1, 0, 0, 1], [0, 0, 1, 1]))
    assert result.selection.keep.sum(1).tolist() == kept
    assert len(result.batch) == sum(kept)
