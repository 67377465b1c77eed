"""The learning rate ramps linearly over train.warmup_steps, counted from the optimizer's state."""

import torch
from tiny_policy import TinyBackend, make_batch

from pcm_core.config import PCMConfig, TrainConfig
from pcm_core.learner import Learner
from pcm_core.profiling import StepTimer
from pcm_phases.proxies import SuccessFailureProxy
from pcm_phases.samplers import AllSampler
from pcm_phases.segmenters import GripperSegmenter


def make_learner(warmup: int, policy: TinyBackend | None = None, **train) -> Learner:
    return Learner(
        policy or TinyBackend(),
        GripperSegmenter(GripperSegmenter.Options(num_phases=2)),
        SuccessFailureProxy(SuccessFailureProxy.Options()),
        AllSampler(AllSampler.Options()),
        PCMConfig(),
        TrainConfig(lr=0.4, warmup_steps=warmup, **train),
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


def test_adam_betas_reach_the_optimizer():
    assert make_learner(0).optimizer.param_groups[0]["betas"] == (0.9, 0.999)
    learner = make_learner(0, adam_betas=(0.8, 0.99))
    learner.update(batch(0), StepTimer())
    # after one step Adam holds m = (1 - beta1) g and v = (1 - beta2) g^2, so m^2 / v = 0.2^2 / 0.01 = 4
    for state in learner.optimizer.state.values():
        m, v = state["exp_avg"], state["exp_avg_sq"]
        nonzero = v > 0
        assert nonzero.any()
        assert torch.allclose(m[nonzero] ** 2 / v[nonzero], torch.full_like(v[nonzero], 4.0), rtol=1e-4)
