"""PCM keep-probabilities, inclusion probabilities, exact sampling, compaction and estimators."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_policy import TinyPolicy, make_batch, naive_grpo_loss, weighted_compact

from pcm_core.algo.grpo import group_advantages
from pcm_core.algo.pcm import (
    KeepProbabilities, inclusion_probabilities, phase_share_probabilities, sample_exact, select_chunks, trajectory_budgets,
)
from pcm_core.types import PhaseScores, Selection


def scores(*values: float) -> PhaseScores:
    return PhaseScores(total=torch.tensor(values, dtype=torch.float64), count=torch.ones(len(values), dtype=torch.long))


NO_SCORES = PhaseScores(total=torch.zeros(2, dtype=torch.float64), count=torch.zeros(2, dtype=torch.long))


# ------------------------------------------------ keep-probabilities (docs/algorithm.md, step 3)


def test_q_after_two_online_updates():
    keep = KeepProbabilities(2, exploration_floor=0.1, ema=0.5)
    # v = (3, 1): w = (0.75, 0.25); w~ = 0.9 w + 0.1 / 2 = (0.725, 0.275); q = 0.5 (0.5, 0.5) + 0.5 w~ = (0.6125, 0.3875)
    assert torch.allclose(keep.update(scores(3.0, 1.0)), torch.tensor([0.6125, 0.3875], dtype=torch.float64))
    # v = (0, 2): w = (0, 1); w~ = (0.05, 0.95); q = 0.5 (0.6125, 0.3875) + 0.5 (0.05, 0.95) = (0.33125, 0.66875)
    assert torch.allclose(keep.update(scores(0.0, 2.0)), torch.tensor([0.33125, 0.66875], dtype=torch.float64))
    assert torch.allclose(keep.v, torch.tensor([0.0, 2.0], dtype=torch.float64))
    assert torch.allclose(keep.w, torch.tensor([0.05, 0.95], dtype=torch.float64))
    # a step without any mixed group leaves q unchanged
    assert torch.allclose(keep.update(NO_SCORES), torch.tensor([0.33125, 0.66875], dtype=torch.float64))


def test_no_concentration_keeps_q_uniform():
    keep = KeepProbabilities(2, concentration=False, ema=0.5)
    for _ in range(3):
        q = keep.update(scores(3.0, 1.0))
    assert torch.allclose(q, torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_all_zero_scores_concentrate_uniformly():
    keep = KeepProbabilities(2, ema=1.0)
    assert torch.allclose(keep.update(scores(0.0, 0.0)), torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_no_exploration_gives_unscored_phase_zero():
    without = KeepProbabilities(2, exploration=False, ema=1.0)
    assert torch.equal(without.update(scores(1.0, 0.0)), torch.tensor([1.0, 0.0], dtype=torch.float64))
    with_floor = KeepProbabilities(2, exploration=True, exploration_floor=0.1, ema=1.0)
    assert torch.allclose(with_floor.update(scores(1.0, 0.0)), torch.tensor([0.95, 0.05], dtype=torch.float64))


def test_no_online_freezes_q_at_first_estimate():
    keep = KeepProbabilities(2, online=False, exploration_floor=0.1, ema=0.5)
    keep.update(NO_SCORES)  # nothing observed yet: still uniform, not frozen
    first = keep.update(scores(3.0, 1.0)).clone()
    assert torch.allclose(first, torch.tensor([0.725, 0.275], dtype=torch.float64))  # w~ of the first batch, no EMA
    assert torch.equal(keep.update(scores(0.0, 2.0)), first)


def test_state_dict_round_trip():
    keep = KeepProbabilities(3, online=False)
    keep.update(scores(1.0, 2.0, 3.0))
    restored = KeepProbabilities(3, online=False)
    restored.load_state_dict(keep.state_dict())
    assert torch.equal(restored.q, keep.q) and restored.frozen
    assert torch.equal(restored.update(scores(5.0, 0.0, 0.0)), keep.q)


# ---------------------------------------------------------------- inclusion probabilities and exact sampling


def test_inclusion_probabilities_hand_examples():
    # (4, 1, 1, 0), B = 2: c = 2/6 gives 4/3 > 1 -> cap chunk 0, the remaining 1 over weights (1, 1) -> 0.5 each
    expected = torch.tensor([1.0, 0.5, 0.5, 0.0], dtype=torch.float64)
    assert torch.allclose(inclusion_probabilities(torch.tensor([4.0, 1.0, 1.0, 0.0]), 2), expected)
    # one positive chunk, B = 2: it gets 1, the other 1 is spread over the 3 zero-weight chunks
    spread = inclusion_probabilities(torch.tensor([1.0, 0.0, 0.0, 0.0]), 2)
    assert torch.allclose(spread, torch.tensor([1.0, 1 / 3, 1 / 3, 1 / 3], dtype=torch.float64))
    assert torch.equal(inclusion_probabilities(torch.zeros(4), 2), torch.full((4,), 0.5, dtype=torch.float64))
    assert torch.equal(inclusion_probabilities(torch.rand(5), 9), torch.ones(5, dtype=torch.float64))


weights_strategy = st.lists(st.floats(0.0, 1e3, allow_subnormal=True) | st.just(0.0), min_size=1, max_size=200)


@settings(max_examples=200, deadline=None)
@given(weights=weights_strategy, budget=st.integers(1, 64), seed=st.integers(0, 2**31 - 1))
def test_exact_budget_and_valid_probabilities(weights, budget, seed):
    pi = inclusion_probabilities(torch.tensor(weights, dtype=torch.float64), budget)
    n = min(budget, len(weights))
    assert bool((pi >= 0).all()) and bool((pi <= 1).all())
    assert abs(float(pi.sum()) - n) < 1e-5
    # pi_t = min(1, c w_t): one c for every uncapped chunk, and the capped ones weigh the most
    w = torch.tensor(weights, dtype=torch.float64)
    uncapped = (pi < 1) & (w > 1e-200)  # tinier weights: w_t / sum w may lose all precision
    if bool(uncapped.any()):
        ratio = pi[uncapped] / w[uncapped]
        assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-9, atol=0), (pi, w)
    if bool((pi < 1).any()):
        assert bool((w[pi == 1] >= w[pi < 1].max()).all()), (pi, w)
    index = sample_exact(pi, torch.Generator().manual_seed(seed))
    assert index.numel() == n
    assert torch.equal(index, torch.unique(index))  # distinct and sorted
    assert bool((pi[index] > 0).all())


@pytest.mark.parametrize(
    "weights, budget",
    [
        ([0.5, 0.3, 0.1, 0.1, 0.0, 0.3, 0.5, 0.05, 0.2, 0.9], 3),
        ([8.0, 1.0, 1.0, 1.0, 2.0, 0.5, 0.5, 3.0], 4),  # chunk 0 is capped at 1
        ([1.0, 0.0, 0.0, 0.0, 0.0, 0.0], 3),  # remainder spread over zero-weight chunks
    ],
)
@pytest.mark.parametrize("order", ["random", "time"])
def test_empirical_inclusion_frequencies_match_pi(weights, budget, order):
    draws = 4_000
    pi = inclusion_probabilities(torch.tensor(weights), budget)
    gen = torch.Generator().manual_seed(1234)
    kept = torch.zeros(draws, pi.numel(), dtype=torch.bool)
    for d in range(draws):
        kept[d, sample_exact(pi, gen, order)] = True
    assert bool((kept.sum(1) == budget).all())  # exactly B every time
    frequency = kept.double().mean(0)
    tolerance = 4 * (pi * (1 - pi) / draws).sqrt() + 1e-12  # 4 standard errors (at most 0.032)
    assert bool(((frequency - pi).abs() <= tolerance).all()), (frequency, pi)
    # power: the frequencies reject a wrong pi, e.g. the uniform B / T
    uniform = torch.full_like(pi, budget / pi.numel())
    assert bool(((frequency - uniform).abs() > 4 * (uniform * (1 - uniform) / draws).sqrt()).any())


def test_phase_shares_by_hand():
    """A failure: 3 approach, 4 align + grasp, 57 toppled chunks; q = (0.45, 0.5, 0.025, 0.025), B = 12.
    The visited phases' q sum to 0.975: shares 12 * 0.45 / 0.975 = 5.54 (> 3 chunks: all kept),
    6.15 (> 4: all kept) and 0.308 over the 57 toppled chunks; the 4.7 chunks of share that the short
    phases cannot use are dropped, not given to the toppled phase."""
    phases = torch.tensor([0] * 3 + [1] * 4 + [3] * 57)
    pi = phase_share_probabilities(phases, torch.tensor([0.45, 0.5, 0.025, 0.025]), 12)
    assert torch.equal(pi[:7], torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(pi[7:], torch.full((57,), 12 * 0.025 / 0.975 / 57, dtype=torch.float64))
    torch.testing.assert_close(pi.sum(), torch.tensor(7 + 12 * 0.025 / 0.975, dtype=torch.float64))
    pooled = inclusion_probabilities(torch.tensor([0.45, 0.5, 0.025, 0.025])[phases], 12)
    assert abs(float(pooled.sum()) - 12) < 1e-9 and float(pooled[7:].sum()) > 4.9  # pooled fills 5 from toppled
    # no visited phase with weight: the budget spreads evenly; a long phase is never over 1
    assert torch.equal(phase_share_probabilities(torch.tensor([2, 2, 2, 2]), torch.tensor([1.0, 0.0, 0.0]), 2),
                       torch.full((4,), 0.5, dtype=torch.float64))


@pytest.mark.parametrize("order", ["random", "time"])
def test_a_fractional_total_keeps_exact_marginals_and_a_floor_or_ceiling_count(order):
    pi = phase_share_probabilities(torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 2, 2]), torch.tensor([0.7, 0.2, 0.1]), 4)
    total = float(pi.sum())
    assert abs(total - round(total)) > 0.1  # 2 + 0.8 + 0.4: not an integer
    draws, gen = 4_000, torch.Generator().manual_seed(7)
    kept = torch.zeros(draws, pi.numel(), dtype=torch.bool)
    for d in range(draws):
        kept[d, sample_exact(pi, gen, order)] = True
    counts = kept.sum(1)
    assert set(counts.tolist()) <= {int(total), int(total) + 1}
    assert abs(float(counts.double().mean()) - total) < 0.05
    tolerance = 4 * (pi * (1 - pi) / draws).sqrt() + 1e-12
    assert bool(((kept.double().mean(0) - pi).abs() <= tolerance).all())


def test_time_order_keeps_one_chunk_in_every_unit_of_pi():
    """Time-ordered systematic sampling with uniform pi = 3 / 12: exactly one kept chunk in each
    block of 4 consecutive chunks (a random order puts two in one block in most draws)."""
    pi = torch.full((12,), 0.25, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        index = sample_exact(pi, gen, "time")
        assert sorted((index // 4).tolist()) == [0, 1, 2]
    clumped = sum(len(set((sample_exact(pi, gen, "random") // 4).tolist())) < 3 for _ in range(200))
    assert clumped > 100


def test_select_chunks_ignores_padding():
    weights = torch.tensor([[1.0, 2.0, 3.0, 9.0], [1.0, 1.0, 1.0, 1.0]])
    selection = select_chunks(weights, torch.tensor([3, 4]), budget=2, generator=torch.Generator().manual_seed(0))
    assert selection.keep.sum(1).tolist() == [2, 2]
    assert not bool(selection.keep[0, 3]) and float(selection.inclusion_prob[0, 3]) == 0.0
    assert torch.allclose(selection.inclusion_prob.sum(1), torch.tensor([2.0, 2.0], dtype=torch.float64))


def test_select_chunks_keeps_each_trajectorys_own_budget():
    selection = select_chunks(torch.ones(3, 8), torch.tensor([8, 5, 2]), torch.tensor([3, 1, 2]), torch.Generator().manual_seed(0))
    assert selection.keep.sum(1).tolist() == [3, 1, 2]
    assert torch.allclose(selection.inclusion_prob[1, :5], torch.full((5,), 0.2, dtype=torch.float64))


def test_fixed_budgets_cap_at_the_trajectory_length():
    assert trajectory_budgets(torch.tensor([64, 12, 11, 1]), 12, "fixed", 64).tolist() == [12, 12, 11, 1]


def test_length_budgets_keep_the_horizon_fraction():
    # B = 12 of T = 64: round(12 * T_i / 64) = 12, 6, 2 (2.06), 1 (0.19 -> at least one), and never above T_i
    assert trajectory_budgets(torch.tensor([64, 32, 11, 1]), 12, "length", 64).tolist() == [12, 6, 2, 1]
    assert trajectory_budgets(torch.tensor([3]), 12, "length", 4).tolist() == [3]  # round(9) capped at T_i = 3


def test_unknown_budget_scaling_names_the_choices():
    with pytest.raises(ValueError, match="'fixed' or 'length'"):
        trajectory_budgets(torch.tensor([4]), 2, "proportional", 4)


# ---------------------------------------------------------------- compaction and estimator weights


def everything(batch) -> Selection:
    keep = batch.chunk_mask
    return Selection(keep=keep, inclusion_prob=keep.to(torch.float64))


def test_compact_gathers_kept_chunks_only(batch):
    selection = select_chunks(torch.ones(batch.chunk_mask.shape), batch.lengths, 2, torch.Generator().manual_seed(0))
    advantages = group_advantages(batch.rewards, batch.group_index)
    out = weighted_compact(batch, selection, advantages)
    assert len(out) == 12  # 6 trajectories x 2
    assert torch.equal(out.obs["feature"], batch.obs["feature"][out.trajectory, out.chunk])
    assert torch.equal(out.tokens, batch.tokens[out.trajectory, out.chunk])
    assert torch.equal(out.advantages, advantages[out.trajectory])
    assert out.instructions == [batch.instructions[i] for i in out.trajectory.tolist()]
    assert bool(selection.keep[out.trajectory, out.chunk].all())


def test_compact_weights_by_hand():
    # N = 2 trajectories of T = (4, 2) chunks, L = 2 tokens; keep chunks {0, 2} of the first and {1} of the second
    batch = make_batch([4, 2], [1, 0], [0, 0])
    keep = torch.tensor([[True, False, True, False], [False, True, False, False]])
    pi = torch.tensor([[0.5, 0.5, 0.25, 0.75], [1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    selection = Selection(keep=keep, inclusion_prob=pi)
    advantages = torch.tensor([1.0, -1.0], dtype=torch.float64)

    def weights(estimator, aggregation):
        return weighted_compact(batch, selection, advantages, estimator, aggregation).weights.tolist()

    assert weights("masked", "token_mean") == pytest.approx([1 / 6] * 3)  # 1 / (L C) = 1 / (2 * 3)
    assert weights("masked", "seq_mean") == pytest.approx([1 / 8, 1 / 8, 1 / 4])  # 1 / (N L kept_i): 1/(2*2*2), 1/(2*2*1)
    assert weights("masked", "traj_sum") == pytest.approx([1 / 16, 1 / 16, 1 / 8])  # 1 / (N L T_i): 1/(2*2*4), 1/(2*2*2)
    iw = [1 / 16 / 0.5, 1 / 16 / 0.25, 1 / 8 / 1.0]  # 1 / (N L T_i pi_t)
    for aggregation in ("token_mean", "seq_mean", "traj_sum"):
        assert weights("iw", aggregation) == pytest.approx(iw)


def test_stratified_weights_by_hand():
    # T = (4, 2), L = 2, phases [0, 0, 1, 1] and [0, 1]; keep chunks {0, 1, 2} of the first, {1} of the second
    batch = make_batch([4, 2], [1, 0], [0, 0])
    keep = torch.tensor([[True, True, True, False], [False, True, False, False]])
    selection = Selection(keep=keep, inclusion_prob=keep.to(torch.float64))
    phases = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 0]])
    advantages = torch.tensor([1.0, -1.0], dtype=torch.float64)
    weights = weighted_compact(batch, selection, advantages, "stratified", phases=phases).weights.tolist()
    # n_ik / (N L T_i kept_ik): phase 0 of trajectory 0 has both chunks kept (2 / (2*2*4*2) each),
    # its phase 1 one of two (2 / (2*2*4*1)); trajectory 1's phase 1 its only chunk (1 / (2*2*2*1))
    assert weights == pytest.approx([1 / 16, 1 / 16, 1 / 8, 1 / 8])
    everything_kept = Selection(keep=batch.chunk_mask, inclusion_prob=batch.chunk_mask.to(torch.float64))
    all_weights = weighted_compact(batch, everything_kept, advantages, "stratified", phases=phases).weights
    traj_sum = weighted_compact(batch, everything_kept, advantages, "masked", "traj_sum").weights
    assert torch.equal(all_weights, traj_sum)  # every chunk kept: plain traj_sum GRPO
    with pytest.raises(ValueError, match="needs the chunks' phases"):
        weighted_compact(batch, selection, advantages, "stratified")


def test_stratified_gives_every_phase_with_a_kept_chunk_its_grpo_weight():
    batch = make_batch([6, 9, 4, 8], [1, 0, 0, 1], [0, 0, 1, 1], seed=5)
    phases = (torch.arange(batch.max_chunks)[None, :] * 3 // batch.lengths[:, None]).clamp(max=2)  # progress
    advantages = group_advantages(batch.rewards, batch.group_index)
    traj_sum = weighted_compact(batch, everything(batch), advantages, "masked", "traj_sum")
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        selection = select_chunks(torch.tensor([0.6, 0.3, 0.1])[phases], batch.lengths, 3, gen)
        kept = weighted_compact(batch, selection, advantages, "stratified", phases=phases)
        for i in range(batch.num_trajectories):
            for k in range(3):
                here = (kept.trajectory == i) & (phases[kept.trajectory, kept.chunk] == k)
                whole = (traj_sum.trajectory == i) & (phases[traj_sum.trajectory, traj_sum.chunk] == k)
                if here.any():
                    assert float(kept.weights[here].sum()) == pytest.approx(float(traj_sum.weights[whole].sum()), rel=1e-12)


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean", "traj_sum"])
def test_keeping_everything_is_plain_grpo(batch, aggregation):
    advantages = group_advantages(batch.rewards, batch.group_index)
    policy = TinyPolicy()
    loss, grad = policy.loss_and_grad(weighted_compact(batch, everything(batch), advantages, "masked", aggregation))
    policy.zero_grad()
    reference = naive_grpo_loss(policy, batch, advantages, aggregation)
    reference.backward()
    reference_grad = torch.cat([p.grad.flatten() for p in policy.parameters()])
    assert torch.allclose(loss, reference.detach(), rtol=0, atol=1e-12)
    assert torch.allclose(grad, reference_grad, rtol=0, atol=1e-12)
    # iw with pi = 1 is traj_sum GRPO, bit for bit
    if aggregation == "traj_sum":
        iw_loss, iw_grad = policy.loss_and_grad(weighted_compact(batch, everything(batch), advantages, "iw", aggregation))
        assert torch.equal(iw_loss, loss) and torch.equal(iw_grad, grad)


@pytest.mark.parametrize("estimator, aggregation", [("masked", "token_mean"), ("masked", "seq_mean"), ("iw", "traj_sum")])
def test_compacted_batch_equals_full_batch_with_zero_weights(batch, estimator, aggregation):
    weights = torch.rand(batch.chunk_mask.shape, generator=torch.Generator().manual_seed(3))
    selection = select_chunks(weights, batch.lengths, 3, torch.Generator().manual_seed(4))
    advantages = group_advantages(batch.rewards, batch.group_index)
    kept = weighted_compact(batch, selection, advantages, estimator, aggregation)
    full = weighted_compact(batch, everything(batch), advantages, estimator, aggregation)  # every real chunk
    chunk_weight = torch.zeros(batch.chunk_mask.shape, dtype=torch.float64)
    chunk_weight[kept.trajectory, kept.chunk] = kept.weights
    full.weights = chunk_weight[full.trajectory, full.chunk]  # dropped chunks weigh 0
    assert len(kept) < len(full)
    policy = TinyPolicy()
    loss, grad = policy.loss_and_grad(kept)
    full_loss, full_grad = policy.loss_and_grad(full)
    assert torch.allclose(loss, full_loss, rtol=0, atol=1e-10)
    assert torch.allclose(grad, full_grad, rtol=0, atol=1e-10)


def test_iw_is_unbiased_and_masked_has_lower_variance():
    batch = make_batch([6, 9, 4, 8], [1, 0, 0, 1], [0, 0, 1, 1], seed=5)
    advantages = group_advantages(batch.rewards, batch.group_index)
    phases = (torch.arange(batch.max_chunks)[None, :] * 3 // batch.lengths[:, None]).clamp(max=2)  # progress
    chunk_weights = torch.tensor([0.6, 0.3, 0.1])[phases]
    policy = TinyPolicy()
    # the loss is linear in the chunk weights: per-chunk gradients g [N*T, params] give every estimate as W @ g
    everything_batch = weighted_compact(batch, everything(batch), advantages, "masked", "traj_sum")
    per_chunk = []
    for c in range(len(everything_batch)):
        one = everything_batch.slice(c, c + 1)
        one.weights = torch.ones(1, dtype=torch.float64)
        per_chunk.append(policy.loss_and_grad(one)[1])
    g = torch.stack(per_chunk)  # [C_all, params]
    slot = torch.full(batch.chunk_mask.shape, -1, dtype=torch.long)
    slot[everything_batch.trajectory, everything_batch.chunk] = torch.arange(len(everything_batch))
    full_grad = everything_batch.weights @ g  # traj_sum GRPO gradient

    # exact: pi_t times the iw weight of chunk t is its traj_sum weight, for every real chunk, so
    # E[iw weight 1{t kept}] = traj_sum weight (given P(t kept) = pi_t, checked above)
    pi = select_chunks(chunk_weights, batch.lengths, 2, torch.Generator().manual_seed(0)).inclusion_prob
    all_iw = weighted_compact(batch, Selection(keep=batch.chunk_mask, inclusion_prob=pi), advantages, "iw")
    assert torch.equal(all_iw.trajectory, everything_batch.trajectory) and torch.equal(all_iw.chunk, everything_batch.chunk)
    assert bool((pi[batch.chunk_mask] < 1).all())  # nothing is kept for sure: the weights differ from traj_sum
    exact = pi[all_iw.trajectory, all_iw.chunk] * all_iw.weights
    torch.testing.assert_close(exact, everything_batch.weights, rtol=1e-14, atol=0)
    torch.testing.assert_close(exact @ g, full_grad, rtol=1e-12, atol=1e-15)

    draws, gen = 400, torch.Generator().manual_seed(0)
    iw_w = torch.zeros(draws, len(everything_batch), dtype=torch.float64)
    masked_w = torch.zeros_like(iw_w)
    for d in range(draws):
        selection = select_chunks(chunk_weights, batch.lengths, 2, gen)
        assert torch.equal(selection.inclusion_prob, pi)
        iw = weighted_compact(batch, selection, advantages, "iw")
        masked = weighted_compact(batch, selection, advantages, "masked", "token_mean")
        iw_w[d, slot[iw.trajectory, iw.chunk]] = iw.weights
        masked_w[d, slot[masked.trajectory, masked.chunk]] = masked.weights
    assert torch.allclose(policy.loss_and_grad(iw)[1], iw_w[-1] @ g, atol=1e-12)  # linearity check on one draw
    iw_grads, masked_grads = iw_w @ g, masked_w @ g  # [draws, params]
    standard_error = iw_grads.std(0) / draws**0.5
    assert bool(((iw_grads.mean(0) - full_grad).abs() <= 4 * standard_error + 1e-12).all())
    iw_variance, masked_variance = float(iw_grads.var(0).sum()), float(masked_grads.var(0).sum())
    print(f"gradient variance (trace) at B=2: masked {masked_variance:.3e}, iw {iw_variance:.3e}")
    assert 1.5 * masked_variance < iw_variance  # about 2.3x at any seed
