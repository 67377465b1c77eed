"""``train.skip_zero_advantage``: trajectories of groups with equal outcomes (advantage exactly 0)
take no forward/backward, and the update is the same as with them (float64, hand-made batch)."""

from __future__ import annotations

import pytest
import torch
from tiny_policy import TinyBackend, make_batch

from pcm_core.config import PCMConfig, TrainConfig
from pcm_core.learner import Learner
from pcm_core.profiling import StepTimer
from pcm_phases.proxies import SuccessFailureProxy
from pcm_phases.samplers import AllSampler, PCMSampler
from pcm_phases.segmenters import GripperSegmenter

# 3 groups of 2: group 0 mixed, group 1 both solved, group 2 mixed; 6 + 9 + 4 + 8 + 9 + 5 = 41 chunks
LENGTHS, REWARDS, GROUPS = [6, 9, 4, 8, 9, 5], [1, 0, 1, 1, 0, 1], [0, 0, 1, 1, 2, 2]


def learner(sampler: str, skip: bool, aggregation: str, kl_coef: float = 0.0, kl_on_uniform_groups: bool = False) -> Learner:
    pcm = PCMConfig(budget=3, budget_scaling="fixed", sampler=sampler, segmenter_options={"num_phases": 3})
    train = TrainConfig(lr=0.05, micro_batch_size=2, max_grad_norm=1e9, seed=3, skip_zero_advantage=skip,
                        loss_aggregation=aggregation, kl_coef=kl_coef, warmup_steps=0,
                        kl_on_uniform_groups=kl_on_uniform_groups)
    chosen = PCMSampler(PCMSampler.Options()) if sampler == "pcm" else AllSampler(AllSampler.Options())
    segmenter = GripperSegmenter(GripperSegmenter.Options(num_phases=3))
    return Learner(TinyBackend(), segmenter, SuccessFailureProxy(SuccessFailureProxy.Options()), chosen, pcm, train)


def params(learner: Learner) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in learner.policy.module.parameters()])


def forwards(learner: Learner, which: str = "policy") -> list[int]:
    """Records the size of every micro-batch the log_probs of ``learner.<which>`` (the policy or
    the KL reference) sees."""
    sizes: list[int] = []
    backend = getattr(learner, which)
    log_probs = backend.log_probs

    def counting(obs, instructions, tokens):
        sizes.append(tokens.shape[0])
        return log_probs(obs, instructions, tokens)

    backend.log_probs = counting
    return sizes


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean", "traj_sum"])
@pytest.mark.parametrize("sampler", ["all", "pcm"])
def test_skipping_zero_advantage_trajectories_changes_only_the_work(sampler, aggregation):
    batch = make_batch(LENGTHS, REWARDS, GROUPS, seed=1)
    full, skipping = learner(sampler, False, aggregation), learner(sampler, True, aggregation)
    full_sizes, skipping_sizes = forwards(full), forwards(skipping)
    start = params(full)
    for step in range(2):  # the second step also checks Adam's moments
        a = full.update(batch, StepTimer())
        b = skipping.update(batch, StepTimer())
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-12, abs=1e-15)
        assert a["kept_chunks"] == b["kept_chunks"]  # the sampler kept the same chunks
    assert torch.allclose(params(full), params(skipping), rtol=1e-12, atol=1e-14)
    assert (params(full) - start).abs().max() > 1e-3  # not vacuous: the weights moved
    solved_group = LENGTHS[2] + LENGTHS[3] if sampler == "all" else 3 + 3  # group 1's kept chunks
    assert sum(full_sizes) - sum(skipping_sizes) == 2 * solved_group  # two steps without group 1's chunks
    assert b["backprop_chunk_fraction"] == pytest.approx(a["backprop_chunk_fraction"] - solved_group / sum(LENGTHS))


def test_with_a_kl_term_on_uniform_groups_nothing_is_skipped():
    batch = make_batch(LENGTHS, REWARDS, GROUPS, seed=1)
    kl = learner("all", True, "seq_mean", kl_coef=0.1, kl_on_uniform_groups=True)
    sizes = forwards(kl)
    kl.update(batch, StepTimer())
    assert sum(sizes) == sum(LENGTHS)  # the reference term has a gradient on every chunk


def test_a_kl_term_kept_off_uniform_groups_skips_them_and_still_anchors_the_rest():
    """Policy and reference see every chunk but the solved group's, and the KL still acts: over
    two steps the weights differ from the same learner without a KL term."""
    batch = make_batch(LENGTHS, REWARDS, GROUPS, seed=1)
    narrow = learner("all", True, "seq_mean", kl_coef=0.1, kl_on_uniform_groups=False)
    no_kl = learner("all", True, "seq_mean")
    policy_sizes, reference_sizes = forwards(narrow), forwards(narrow, "reference")
    for step in range(2):  # the k3 gradient is 0 at the reference, so the second step shows it
        metrics = narrow.update(batch, StepTimer())
        no_kl.update(batch, StepTimer())
    solved_group = LENGTHS[2] + LENGTHS[3]
    assert sum(policy_sizes) == sum(reference_sizes) == 2 * (sum(LENGTHS) - solved_group)
    assert metrics["backprop_chunk_fraction"] == pytest.approx(1 - solved_group / sum(LENGTHS))
    assert (params(narrow) - params(no_kl)).abs().max() > 1e-6


def test_a_batch_without_a_mixed_group_still_steps_adam_as_before():
    """No chunk has a loss term: no forward at all, and the update equals a zero-gradient step."""
    mixed, uniform = make_batch(LENGTHS, REWARDS, GROUPS, seed=1), make_batch([4, 5], [1, 1], [0, 0], seed=2)
    full, skipping = learner("all", False, "seq_mean"), learner("all", True, "seq_mean")
    for one in (full, skipping):
        one.update(mixed, StepTimer())  # Adam's first moment is non-zero from here on
    sizes = forwards(skipping)
    full.update(uniform, StepTimer())
    metrics = skipping.update(uniform, StepTimer())
    assert sizes == [] and metrics["backprop_chunk_fraction"] == 0.0
    assert torch.allclose(params(full), params(skipping), rtol=1e-12, atol=1e-14)
