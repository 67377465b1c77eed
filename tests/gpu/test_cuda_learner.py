"""The learner on a CUDA device: rollouts, masked-vs-sliced gradients, bf16 updates, peak memory.

Skipped without a GPU (CI has none); run on one with ``pytest -m cuda tests/gpu``.
"""

from __future__ import annotations

import pytest
import torch
from gradient_check import gradient, zero_weighted_full_batch

from benchmarks.common import build_env, build_policy, collect_batch, config_for, make_learner
from pcm_core.profiling import StepTimer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

OVERRIDES = ["env.options.max_steps=64", "train.micro_batch_size=8"]


@pytest.fixture(scope="module")
def setup():
    """A 1m tinyvla on the GPU and a 2 x 2 trajectory batch it collected (16 chunks each)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False  # exact float32 for the gradient comparison
    config = config_for("pcm", 4, "1m", overrides=OVERRIDES)
    policy = build_policy(config, torch.device("cuda"))
    env = build_env(config, 4)
    batch, _ = collect_batch(policy, env, groups=2, group_size=2, seed=0)
    env.close()
    return policy, batch


def test_rollout_batch_is_on_the_cpu(setup):
    _, batch = setup
    assert batch.tokens.device.type == "cpu" and batch.old_logprobs.device.type == "cpu"
    assert batch.num_trajectories == 4 and int(batch.lengths.max()) == 16


def test_kept_chunks_alone_give_the_full_batch_gradient_with_zero_weights(setup):
    """Physically dropping chunks changes nothing but the work: float32 on the GPU, same gradient."""
    policy, batch = setup
    learner = make_learner(policy, config_for("pcm", 4, "1m", overrides=OVERRIDES))
    result = learner.select(batch)
    full = zero_weighted_full_batch(batch, learner, result)
    assert len(result.batch) == 16 < len(full) == 64
    kept_grad, full_grad = gradient(learner, result.batch), gradient(learner, full)
    assert kept_grad.abs().sum() > 0
    torch.testing.assert_close(kept_grad, full_grad, rtol=1e-4, atol=1e-6)


def test_bf16_update_reports_peak_memory_and_moves_the_weights(setup):
    policy, batch = setup
    before = [p.detach().clone() for p in policy.module.parameters()]
    peaks = {}
    for sampler in ("all", "pcm"):
        learner = make_learner(policy, config_for(sampler, 4, "1m", overrides=[*OVERRIDES, "train.dtype=bfloat16"]))
        metrics = learner.update(batch, StepTimer())
        assert torch.isfinite(torch.tensor(metrics["loss"])) and metrics["faults/skipped_updates"] == 0
        peaks[sampler] = (metrics["cuda_peak_memory_bytes"], metrics["saved_activation_bytes"])
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.module.parameters()))
    assert peaks["pcm"][1] < peaks["all"][1]  # 16 of 64 chunks saved for backward
    assert 0 < peaks["pcm"][0] <= peaks["all"][0]


def test_bf16_rollout_and_update_agree_on_an_unchanged_policy(setup):
    """Rollouts run under the same bf16 autocast as the update: before any step, every token's
    ratio is 1, so nothing is clipped."""
    from pcm_core.learner import policy_precision

    policy, _ = setup
    config = config_for("all", 4, "1m", overrides=[*OVERRIDES, "train.dtype=bfloat16"])
    env = build_env(config, 4)
    with policy_precision(policy.device, config.train):
        batch, _ = collect_batch(policy, env, groups=2, group_size=2, seed=1)
    env.close()
    learner = make_learner(policy, config)
    compact_batch = learner.select(batch).batch
    losses = learner.backward(compact_batch)
    learner.optimizer.zero_grad(set_to_none=True)
    assert losses["clip_fraction"] == 0.0
