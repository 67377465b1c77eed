"""The built-in segmenters, variance proxies and budget samplers of ``pcm_phases``."""

import pytest
import torch
from tiny_policy import TinyPolicy, make_batch, naive_grpo_loss, weighted_compact

from pcm_core.algo.grpo import group_advantages
from pcm_core.errors import ConfigError
from pcm_core.registry import get_registry


def build(kind: str, name: str, **options):
    cls = get_registry().get(kind, name).cls
    return cls(cls.Options(**options))


def test_registry_lists_the_builtin_components():
    registry = get_registry()
    assert sorted(registry.components("segmenter")) == ["env", "gripper", "progress"]
    assert sorted(registry.components("proxy")) == ["entropy", "success_failure", "uniform"]
    assert sorted(registry.components("sampler")) == ["all", "pcm", "topk", "uniform"]


# ---------------------------------------------------------------- segmenters


def test_gripper_segmenter_counts_toggles():
    batch = make_batch([7, 3], [1, 0], [0, 0])
    # last action's gripper dim per chunk: open, open, close, close, open, close, open (-> capped at P-1 = 3)
    batch.actions[0, :, -1, -1] = torch.tensor([-1.0, -0.5, 1.0, 0.2, -1.0, 1.0, -1.0])
    batch.actions[0, :, 0, -1] = 1.0  # earlier actions of a chunk do not matter
    phases = build("segmenter", "gripper").segment(batch)
    assert phases[0].tolist() == [0, 0, 1, 1, 2, 3, 3]
    assert build("segmenter", "gripper", num_phases=2).segment(batch)[0].tolist() == [0, 0, 1, 1, 1, 1, 1]


def test_progress_segmenter_slices_normalised_time():
    batch = make_batch([5, 8], [1, 0], [0, 0])
    phases = build("segmenter", "progress").segment(batch)
    assert phases[0, :5].tolist() == [0, 0, 1, 2, 3]  # floor(4 t / 5)
    assert phases[1].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # floor(4 t / 8)


def test_env_segmenter_reads_and_clamps_labels():
    batch = make_batch([3, 3], [1, 0], [0, 0])
    segmenter = build("segmenter", "env", num_phases=3)
    with pytest.raises(ConfigError, match="phase labels"):
        segmenter.segment(batch)
    batch.info["phase"] = torch.tensor([[0, 1, 7], [2, 2, 0]])
    assert segmenter.segment(batch).tolist() == [[0, 1, 2], [2, 2, 0]]


# ---------------------------------------------------------------- proxies


def test_success_failure_scores_two_groups_by_hand():
    # D = 2, K = 2; chunk 2 is padding on every trajectory (garbage actions must not count)
    batch = make_batch([3] * 7, [1, 0, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 2, 2])
    batch.actions = torch.zeros(7, 3, 2, 2)
    batch.actions[:, 2] = 99.0
    batch.lengths = torch.full((7,), 2)
    phases = torch.tensor([[0, 1, 1], [0, 1, 1], [0, 0, 1], [0, 1, 1], [0, 0, 1], [0, 1, 1], [0, 1, 1]])
    # group 0 (p = 1/2): phase 0 success actions (2, 1), (0, 1) -> mu^S = (1, 1); failure (-1, 1) twice -> mu^F = (-1, 1)
    #   v_00 = 1/4 * ((1 - -1)^2 + 0) / 2 = 0.5; phase 1: all zero actions on both sides -> v_01 = 0
    batch.actions[0, 0] = torch.tensor([[2.0, 1.0], [0.0, 1.0]])
    batch.actions[1, 0] = torch.tensor([[-1.0, 1.0], [-1.0, 1.0]])
    # group 1 (p = 2/3, p(1-p) = 2/9): phase 0 success chunks: traj 2 t0 (1, 0), traj 2 t1 (0, 0), traj 3 t0 (1, 0)
    #   -> mu^S = (2/3, 0); failure traj 4 all zero -> mu^F = (0, 0); v_10 = 2/9 * (4/9) / 2 = 4/81
    #   phase 1 occurs only in success traj 3 -> does not count
    batch.actions[2, 0] = torch.tensor([1.0, 0.0])
    batch.actions[3, 0] = torch.tensor([1.0, 0.0])
    batch.actions[3, 1] = torch.tensor([0.5, 0.5])
    # group 2: all failed -> ignored despite different actions
    batch.actions[5, 1] = 1.0
    scores = build("proxy", "success_failure").score(batch, phases, 2)
    assert torch.allclose(scores.total, torch.tensor([0.5 + 4 / 81, 0.0]))
    assert scores.count.tolist() == [2, 1]
    assert torch.allclose(scores.value, torch.tensor([(0.5 + 4 / 81) / 2, 0.0]))


def test_success_failure_without_mixed_groups_observes_nothing():
    batch = make_batch([3, 3], [1, 1], [0, 0])
    assert not build("proxy", "success_failure").score(batch, torch.zeros(2, 3, dtype=torch.long), 2).observed


def test_uniform_and_entropy_proxies():
    batch = make_batch([3, 2], [1, 0], [0, 0])
    phases = torch.tensor([[0, 1, 1], [1, 1, 0]])
    assert torch.equal(build("proxy", "uniform").score(batch, phases, 2).value, torch.ones(2))
    batch.entropy = torch.tensor([[1.0, 2.0, 4.0], [3.0, 5.0, 100.0]])  # 100 is padding
    scores = build("proxy", "entropy").score(batch, phases, 2)
    assert torch.allclose(scores.value, torch.tensor([1.0, (2.0 + 4.0 + 3.0 + 5.0) / 4]))


# ---------------------------------------------------------------- samplers

SAMPLERS = ["pcm", "uniform", "all", "topk"]
KEEP_PROBS = torch.tensor([0.7, 0.2, 0.1, 0.0], dtype=torch.float64)


def progress_phases(batch):
    return build("segmenter", "progress").segment(batch)


@pytest.mark.parametrize("name", SAMPLERS)
def test_samplers_keep_exactly_the_budget(batch, name):
    options = {"allocation": "pooled"} if name == "pcm" else {}  # per_phase keeps at most B
    selection = build("sampler", name, **options).select(progress_phases(batch), batch.lengths, KEEP_PROBS, 3, torch.Generator().manual_seed(0))
    expected = batch.lengths if name == "all" else batch.lengths.clamp(max=3)
    assert torch.equal(selection.keep.sum(1), expected)
    assert not bool((selection.keep & ~batch.chunk_mask).any())
    assert torch.equal(selection.inclusion_prob[~batch.chunk_mask], torch.zeros(int((~batch.chunk_mask).sum()), dtype=torch.float64))


def test_topk_keeps_highest_keep_probability_earliest_first():
    phases = torch.tensor([[2, 1, 0, 1, 0, 2]])
    selection = build("sampler", "topk").select(phases, torch.tensor([6]), KEEP_PROBS, 3)
    assert selection.keep[0].tolist() == [False, True, True, False, True, False]  # both phase-0, then the first phase-1


def test_pcm_sampler_uses_phase_keep_probabilities(batch):
    selection = build("sampler", "pcm", allocation="pooled").select(progress_phases(batch), batch.lengths, KEEP_PROBS, 2, torch.Generator().manual_seed(0))
    # T = 9: phases 0,0,0,1,1,2,2,3,3 (floor(4 t / 9)), q = .7 .7 .7 .2 .2 .1 .1 0 0, sum 2.7:
    # pi = 2 q / 2.7 (none above 1) = (14, 14, 14, 4, 4, 2, 2, 0, 0) / 27
    expected = torch.tensor([14, 14, 14, 4, 4, 2, 2, 0, 0], dtype=torch.float64) / 27
    torch.testing.assert_close(selection.inclusion_prob[1], expected, rtol=1e-15, atol=1e-15)
    # T = 6: phases 0,0,1,2,2,3, q sum 1.8: pi = 2 q / 1.8 = (7, 7, 2, 1, 1, 0) / 9
    expected = torch.tensor([7, 7, 2, 1, 1, 0], dtype=torch.float64) / 9
    torch.testing.assert_close(selection.inclusion_prob[0, :6], expected, rtol=1e-15, atol=1e-15)
    assert selection.keep.sum(1).tolist() == [2] * 6
    assert not bool((selection.keep & (selection.inclusion_prob == 0)).any())  # phase 3 (q = 0) is never kept


def test_pcm_sampler_per_phase_allocation_by_hand(batch):
    sampler = build("sampler", "pcm", allocation="per_phase")
    selection = sampler.select(progress_phases(batch), batch.lengths, KEEP_PROBS, 2, torch.Generator().manual_seed(0))
    # T = 9: phases 0,0,0,1,1,2,2,3,3, all visited, q sum 1: shares 2 q = (1.4, 0.4, 0.2, 0) over (3, 2, 2, 2) chunks
    expected = torch.tensor([1.4 / 3] * 3 + [0.2] * 2 + [0.1] * 2 + [0.0] * 2, dtype=torch.float64)
    torch.testing.assert_close(selection.inclusion_prob[1], expected, rtol=1e-12, atol=1e-15)
    # T = 6: phases 0,0,1,2,2,3: shares (1.4, 0.4, 0.2, 0) over (2, 1, 2, 1) chunks
    expected = torch.tensor([0.7, 0.7, 0.4, 0.1, 0.1, 0.0], dtype=torch.float64)
    torch.testing.assert_close(selection.inclusion_prob[0, :6], expected, rtol=1e-12, atol=1e-15)
    assert bool((selection.keep.sum(1) <= 2).all()) and not bool((selection.keep & ~batch.chunk_mask).any())
    # a budget of the whole trajectory still leaves out what the phases' shares do not cover: T = 9, B = 9
    # gives shares 9 q = (6.3, 1.8, 0.9, 0) over (3, 2, 2, 2) chunks
    whole = sampler.select(progress_phases(batch), batch.lengths, KEEP_PROBS, 9, torch.Generator().manual_seed(0))
    expected = torch.tensor([1.0] * 3 + [0.9] * 2 + [0.45] * 2 + [0.0] * 2, dtype=torch.float64)
    torch.testing.assert_close(whole.inclusion_prob[1], expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("estimator, aggregation", [("masked", "token_mean"), ("masked", "seq_mean"), ("iw", "traj_sum")])
def test_budget_at_least_length_is_grpo_bit_for_bit(batch, name, estimator, aggregation):
    """With B >= T every sampler keeps every real chunk with pi = 1: plain GRPO, computed
    independently on the padded batch (and bit for bit what the ``all`` sampler gives)."""
    phases, advantages = progress_phases(batch), group_advantages(batch.rewards, batch.group_index)
    budget = batch.max_chunks
    options = {"allocation": "pooled"} if name == "pcm" else {}  # per_phase drops low shares even then (below)
    selection = build("sampler", name, **options).select(phases, batch.lengths, KEEP_PROBS, budget, torch.Generator().manual_seed(0))
    assert torch.equal(selection.keep, batch.chunk_mask)
    assert torch.equal(selection.inclusion_prob, batch.chunk_mask.to(torch.float64))
    policy = TinyPolicy()
    loss, grad = policy.loss_and_grad(weighted_compact(batch, selection, advantages, estimator, aggregation))
    policy.zero_grad()
    reference = naive_grpo_loss(policy, batch, advantages, "traj_sum" if estimator == "iw" else aggregation)
    reference.backward()
    reference_grad = torch.cat([p.grad.flatten() for p in policy.parameters()])
    assert torch.allclose(loss, reference.detach(), rtol=0, atol=1e-12)
    assert torch.allclose(grad, reference_grad, rtol=0, atol=1e-12)
    if name != "all":
        grpo = build("sampler", "all").select(phases, batch.lengths, KEEP_PROBS, budget)
        grpo_loss, grpo_grad = TinyPolicy().loss_and_grad(weighted_compact(batch, grpo, advantages, estimator, aggregation))
        assert torch.equal(loss, grpo_loss) and torch.equal(grad, grpo_grad)
