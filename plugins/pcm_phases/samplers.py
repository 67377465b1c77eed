"""Budget samplers: choose the chunks of each trajectory that enter the update (docs/algorithm.md, step 4)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from pcm_core.algo.pcm import select_chunks
from pcm_core.interfaces import BudgetSampler, Options
from pcm_core.types import Selection
from pcm_phases.proxies import NoOptions


class SamplingOptions(Options):
    order: Literal["random", "time"] = Field(
        "random", description="how systematic sampling lays the chunks: random (a random permutation) or time "
        "(time order: the same pi_t, kept chunks spread over each phase)"
    )


def _real_chunks(phases: Tensor, lengths: Tensor) -> Tensor:
    """``[N, T]`` True on real chunks."""
    steps = torch.arange(phases.shape[1], device=lengths.device)
    return steps[None, :] < lengths[:, None]


class PCMSampler(BudgetSampler):
    """PCM: chunk weight ``q[phase]``, inclusion probabilities ``pi_t = min(1, c q)`` summing to
    ``B_i``, then exactly that many distinct chunks with these marginals."""

    Options = SamplingOptions

    def select(
        self, phases: Tensor, lengths: Tensor, keep_probs: Tensor, budget: Tensor, generator: torch.Generator | None = None
    ) -> Selection:
        weights = keep_probs.to(phases.device)[phases.clamp(0, keep_probs.numel() - 1)]  # q_{phase(t)}  [N, T]
        return select_chunks(weights, lengths, budget, generator, self.options.order)


class UniformSampler(BudgetSampler):
    """Random masking baseline: ``B_i`` chunks uniformly at random, ``pi_t = B_i / T_i``."""

    Options = SamplingOptions

    def select(
        self, phases: Tensor, lengths: Tensor, keep_probs: Tensor, budget: Tensor, generator: torch.Generator | None = None
    ) -> Selection:
        return select_chunks(torch.ones(phases.shape), lengths, budget, generator, self.options.order)


class AllSampler(BudgetSampler):
    """Keep every real chunk (``pi = 1``): plain GRPO. The budget is ignored."""

    Options = NoOptions

    def select(
        self, phases: Tensor, lengths: Tensor, keep_probs: Tensor, budget: Tensor, generator: torch.Generator | None = None
    ) -> Selection:
        keep = _real_chunks(phases, lengths).cpu()
        return Selection(keep=keep, inclusion_prob=keep.to(torch.float64))


class TopKSampler(BudgetSampler):
    """Deterministic ablation: the ``B_i`` chunks with the highest ``q[phase]`` (ties: earlier
    chunks first), reported with ``pi = 1``. Biased: chunks of low-``q`` phases are never trained on."""

    Options = NoOptions

    def select(
        self, phases: Tensor, lengths: Tensor, keep_probs: Tensor, budget: Tensor, generator: torch.Generator | None = None
    ) -> Selection:
        weights = keep_probs.to(phases.device)[phases.clamp(0, keep_probs.numel() - 1)].cpu()  # q_{phase(t)}  [N, T]
        keep = torch.zeros(phases.shape, dtype=torch.bool)
        budgets = torch.as_tensor(budget).expand(lengths.shape).tolist()  # B_i
        for i, length in enumerate(lengths.tolist()):
            order = torch.sort(weights[i, :length], descending=True, stable=True).indices  # best first, earlier on ties
            keep[i, order[: budgets[i]]] = True
        return Selection(keep=keep, inclusion_prob=keep.to(torch.float64))
