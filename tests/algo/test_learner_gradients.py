"""The real learner and a transformer policy on the CPU: dropping chunks physically changes nothing
but the work (the CPU twin of tests/gpu/test_cuda_learner.py's gradient-equality test).

A 1-layer tinyvla on 16-pixel images (tests/reliability/conftest.py's TINY settings) collects
2 groups x 2 trajectories of 8 chunks; PCM keeps 4 of each trajectory's 8 chunks.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from gradient_check import gradient, zero_weighted_full_batch

from benchmarks.common import build_env, build_policy, collect_batch, config_for, make_learner


def _reliability_tiny() -> list[str]:
    """TINY of tests/reliability/conftest.py (loaded by path: ``conftest`` names another module here)."""
    path = Path(__file__).resolve().parent.parent / "reliability" / "conftest.py"
    spec = importlib.util.spec_from_file_location("reliability_conftest_settings", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.TINY)


TINY = _reliability_tiny()


def tiny_config(*overrides: str):
    return config_for("pcm", 4, None, overrides=[*TINY, *overrides])


@pytest.fixture(scope="module")
def setup():
    """The tiny policy and one 2 x 2 batch it collected (float32, one thread, deterministic kernels)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        config = tiny_config()
        policy = build_policy(config, torch.device("cpu"))
        env = build_env(config, 4)
        batch, _ = collect_batch(policy, env, groups=2, group_size=2, seed=0)
        env.close()
        yield policy, batch
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)


def test_the_batch_has_the_expected_shape(setup):
    _, batch = setup
    assert batch.num_trajectories == 4 and batch.lengths.tolist() == [8, 8, 8, 8]
    assert len(set(batch.instructions)) == 2  # two tasks: instructions differ across rows of one forward


def test_kept_chunks_alone_give_the_full_batch_gradient_with_zero_weights(setup):
    policy, batch = setup
    learner = make_learner(policy, tiny_config())
    result = learner.select(batch)
    full = zero_weighted_full_batch(batch, learner, result)
    assert len(result.batch) == 16 < len(full) == 32
    assert int((full.weights != 0).sum()) == 16
    kept_grad, full_grad = gradient(learner, result.batch), gradient(learner, full)
    assert kept_grad.abs().sum() > 0
    torch.testing.assert_close(kept_grad, full_grad, rtol=1e-5, atol=1e-7)


def test_micro_batch_size_does_not_change_the_gradient(setup):
    policy, batch = setup
    one = make_learner(policy, tiny_config("train.micro_batch_size=1"))
    eight = make_learner(policy, tiny_config("train.micro_batch_size=8"))
    assert one.train.micro_batch_size == 1 and eight.train.micro_batch_size == 8
    result = one.select(batch)
    full = zero_weighted_full_batch(batch, one, result)
    for compact_batch in (result.batch, full):  # 16 kept chunks (2 micro-batches of 8) and all 32
        grad_one, grad_eight = gradient(one, compact_batch), gradient(eight, compact_batch)
        assert grad_one.abs().sum() > 0
        torch.testing.assert_close(grad_one, grad_eight, rtol=1e-5, atol=1e-7)
