"""The learning rate ramps linearly over train.warmup_steps, counted from the optimizer's state."""

import torch
from tiny_policy import TinyBackend, make_batch

from pcm_core.config import PCMConfig, TrainConfig
from pcm_core.learner import Learner
from pcm_core.profiling import StepTimer
from pcm_phases.proxies import SuccessFailureProxy
from pcm_phases.samplers import AllSampler
from pcm_phases.segmenters import GripperSegmenter


def make_learner(warmup: int, policy: TinyBackend | None = None) -> Learner:
    return Learner(
        policy or TinyBackend(),
        GripperSegmenter(GripperSegmenter.Options(num_phases=2)),
        SuccessFailureProxy(SuccessFailureProxy.Options()),
        AllSampler(AllSampler.Options()),
        PCMConfig(),
        TrainConfig(lr=0.4, warmup_steps=warmup),
    )


def batch(step: int):
    return make_batch([3, 4, 2, 5], [1, 0, 0, 1], [0, 0, 1, 1], seed=step)


def test_linear_ramp_then_constant():
    learner = make_learner(warmup=4)
    rates = [learner.update(batch(s), StepTimer())["learning_rate"] for s in range(6)]
    assert rates == [0.1, 0.2, 0.30000000000000004, 0.4, 0.4, 0.4]
    assert [make_learner(0).update(batch(0), StepTimer())["learning_rate"]] == [0.4]


def test_resumed_optimizer_continues_the_ramp():
    first = make_learner(warmup=4)
    for s in range(2):
        first.update(batch(s), StepTimer())
    resumed = make_learner(warmup=4, policy=first.policy)
    resumed.optimizer.load_state_dict(first.optimizer.state_dict())
    assert resumed.update(batch(2), StepTimer())["learning_rate"] == 0.30000000000000004
