"""The learner hands the sampler each trajectory's budget B_i (pcm.budget_scaling)."""

import pytest
from tiny_policy import TinyBackend, make_batch

from pcm_core.config import PCMConfig, TrainConfig
from pcm_core.learner import Learner
from pcm_phases.proxies import SuccessFailureProxy
from pcm_phases.samplers import PCMSampler
from pcm_phases.segmenters import GripperSegmenter


def make_learner(scaling: str) -> Learner:
    return Learner(
        TinyBackend(),
        GripperSegmenter(GripperSegmenter.Options(num_phases=2)),
        SuccessFailureProxy(SuccessFailureProxy.Options()),
        PCMSampler(PCMSampler.Options(allocation="pooled")),  # exactly B_i chunks: the budgets show
        PCMConfig(budget=4, budget_scaling=scaling),
        TrainConfig(),
    )


@pytest.mark.parametrize(("scaling", "kept"), [("fixed", [4, 2, 4, 4]), ("length", [4, 1, 2, 4])])
def test_kept_chunks_per_trajectory(scaling, kept):
    learner = make_learner(scaling)
    # padded T = 8: length scaling keeps round(4 T_i / 8) = 4, 1 (of 2), 2 (of 4), 4
    result = learner.select(make_batch([8, 2, 4, 8], [1, 0, 0, 1], [0, 0, 1, 1]))
    assert result.selection.keep.sum(1).tolist() == kept
    assert len(result.batch) == sum(kept)


@pytest.mark.parametrize(("scaling", "kept"), [("fixed", [4, 4, 3, 4]), ("length", [1, 2, 1, 2])])
def test_length_budgets_scale_against_the_horizon_not_the_padding(scaling, kept):
    """Every episode ended early (padded T = 9 of a 16-chunk horizon): length budgets are
    round(4 T_i / 16) = round(1.25, 1.75, 0.75, 2.25) = 1, 2, 1, 2, not round(4 T_i / 9) = 2, 3, 1, 4."""
    batch = make_batch([5, 7, 3, 9], [1, 0, 0, 1], [0, 0, 1, 1])
    batch.horizon = 16
    assert make_learner(scaling).select(batch).selection.keep.sum(1).tolist() == kept
