"""GRPO advantages, PPO-clip token loss, k3 KL and the weighted policy loss, on hand-checked numbers."""

import math

import torch

from pcm_core.algo.grpo import group_advantages, kl_k3, policy_loss, ppo_clip_token_loss, uniform_groups


def test_group_advantages_hand_example():
    # group 5: R = [1, 0, 0]: mean 1/3, deviations (2/3, -1/3, -1/3), squares sum 4/9 + 1/9 + 1/9 = 2/3,
    #   unbiased var (2/3) / (3 - 1) = 1/3, std 1/sqrt(3): A = (2/3) sqrt(3) = 2/sqrt(3), -1/sqrt(3), -1/sqrt(3)
    #   (the population std sqrt(2/9) would give sqrt(2) and -1/sqrt(2) instead)
    # group 2: R = [1, 1]: all equal -> A = 0
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0])
    groups = torch.tensor([5, 2, 5, 5, 2])
    s3 = math.sqrt(3.0)
    expected = torch.tensor([2 / s3, 0.0, -1 / s3, -1 / s3, 0.0])
    assert torch.allclose(group_advantages(rewards, groups, eps=0.0), expected, atol=1e-6)
    assert torch.allclose(group_advantages(rewards, groups), expected, atol=1e-5)
    assert torch.equal(group_advantages(rewards, groups)[[1, 4]], torch.zeros(2))
    assert uniform_groups(rewards, groups).tolist() == [True, False]  # sorted group ids: 2, 5


def test_singleton_and_all_failed_groups_get_zero():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    groups = torch.tensor([0, 1, 1, 1])
    assert torch.equal(group_advantages(rewards, groups), torch.zeros(4))
    assert uniform_groups(rewards, groups).tolist() == [True, True]


def test_ppo_clip_three_tokens_below_inside_above():
    # eps_low = 0.2, eps_high = 0.28: clip range [0.8, 1.28]; ratios 0.5 (below), 1.1 (inside), 1.5 (above)
    # A = +2: -min(rA, clip(r)A) = -min(1.0, 1.6), -min(2.2, 2.2), -min(3.0, 2.56) = -1.0, -2.2, -2.56
    # A = -1: -min(-0.5, -0.8), -min(-1.1, -1.1), -min(-1.5, -1.28) = 0.8, 1.1, 1.5
    ratios = torch.tensor([[0.5, 1.1, 1.5], [0.5, 1.1, 1.5]], dtype=torch.float64)
    logprobs = ratios.log().requires_grad_(True)
    old = torch.zeros_like(ratios)
    advantages = torch.tensor([2.0, -1.0], dtype=torch.float64)
    loss = ppo_clip_token_loss(logprobs, old, advantages, clip_low=0.2, clip_high=0.28)
    expected = torch.tensor([[-1.0, -2.2, -2.56], [0.8, 1.1, 1.5]], dtype=torch.float64)
    assert torch.allclose(loss, expected, atol=1e-12)
    loss.sum().backward()
    # d(-r A)/d logp = -r A where unclipped; 0 where the clipped branch is active (A>0, r=1.5; A<0, r=0.5)
    assert torch.allclose(logprobs.grad, torch.tensor([[-1.0, -2.2, 0.0], [0.0, 1.1, 1.5]], dtype=torch.float64))


def test_policy_loss_weights_and_stats():
    ratios = torch.tensor([[0.5, 1.1, 1.5], [0.5, 1.1, 1.5]], dtype=torch.float64)
    logprobs = ratios.log()
    advantages = torch.tensor([2.0, -1.0], dtype=torch.float64)
    weights = torch.tensor([0.5, 0.25], dtype=torch.float64)
    # 0.5 * (-1.0 - 2.2 - 2.56) + 0.25 * (0.8 + 1.1 + 1.5) = -2.88 + 0.85 = -2.03
    loss, stats = policy_loss(logprobs, torch.zeros_like(ratios), advantages, weights, 0.2, 0.28)
    assert abs(float(loss) + 2.03) < 1e-12
    assert abs(float(stats["clip_fraction"]) - 4 / 6) < 1e-12  # r = 0.5 and 1.5 in both rows
    assert not stats["approx_kl"].requires_grad


def test_kl_k3_and_kl_term():
    # d = ref - logp = log 2: exp(d) - d - 1 = 2 - 0.693147... - 1 = 0.306853...
    logprobs = torch.zeros(1, 2, dtype=torch.float64)
    ref = torch.full((1, 2), math.log(2.0), dtype=torch.float64)
    assert torch.allclose(kl_k3(logprobs, ref), torch.full((1, 2), 1.0 - math.log(2.0), dtype=torch.float64))
    assert torch.equal(kl_k3(ref, ref), torch.zeros(1, 2, dtype=torch.float64))
    # ratio 1, A = 1: token loss -1 each; + 0.1 * 0.306853 each; weight 0.5 over 2 tokens
    loss, stats = policy_loss(
        logprobs, logprobs, torch.ones(1, dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64),
        0.2, 0.28, ref_logprobs=ref, kl_coef=0.1,
    )
    assert abs(float(loss) - (-1.0 + 0.1 * (1.0 - math.log(2.0)))) < 1e-12
    assert abs(float(stats["ref_kl"]) - (1.0 - math.log(2.0))) < 1e-12
