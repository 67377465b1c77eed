"""Inverse-CDF token sampling draws each token with its probability."""

import torch

from pcm_core.categorical import sample_tokens


def test_frequencies_match_probabilities():
    probs = torch.tensor([[0.5, 0.0, 0.2, 0.3], [0.0, 0.0, 1.0, 0.0]])  # [L=2, V=4]
    log_p = probs.log()[None].expand(20_000, -1, -1)  # [B, L, V]
    tokens = sample_tokens(log_p, torch.Generator().manual_seed(0))  # [B, L]
    counts = torch.stack([torch.bincount(tokens[:, i], minlength=4) for i in range(2)]).float() / 20_000
    assert counts[1].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert counts[0, 1] == 0.0  # a zero-probability bin is never drawn
    assert torch.allclose(counts[0], probs[0], atol=0.015)  # binomial std <= 0.0036


def test_greedy_is_argmax_and_generator_makes_it_reproducible():
    log_p = torch.log_softmax(torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(1)), -1)
    assert torch.equal(sample_tokens(log_p, greedy=True), log_p.argmax(-1))
    first = sample_tokens(log_p, torch.Generator().manual_seed(2))
    assert torch.equal(first, sample_tokens(log_p, torch.Generator().manual_seed(2)))
    assert first.shape == (3, 5) and int(first.max()) < 7


def test_unnormalised_rounding_never_overflows():
    log_p = torch.full((1000, 1, 3), -30.0)  # total mass ~3e-13: u is scaled by the total, not 1
    tokens = sample_tokens(log_p, torch.Generator().manual_seed(3))
    counts = torch.bincount(tokens.flatten(), minlength=3)
    assert len(counts) == 3 and int(counts.min()) > 250  # still uniform over the three bins
