"""Budget samplers: choose the chunks of each trajectory that enter the update (docs/algorithm.md, step 4)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from pcm_core.algo.pcm import phase_share_probabilities, select_chunks
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


class PCMSamplingOptions(SamplingOptions):
    allocation: Literal["pooled", "per_phase"] = Field(
        "pooled", description="pooled [paper]: pi_t = min(1, c q[phase]) summing to B_i, the budget that short phases "
        "cannot use goes to the others (exactly B_i chunks); per_phase: each visited phase's share B_i q_k / sum q is "
        "spread over its chunks and what it cannot use is dropped, so a trajectory keeps at most B_i chunks"
    )


class PCMSampler(BudgetSampler):
    """PCM: chunk weight ``q[phase]``; inclusion probabilities ``pi_t = min(1, c q)`` summing to
    ``B_i`` (``pooled``) or each phase's share of ``B_i`` over its chunks (``per_phase``,
    :func:`~pcm_core.algo.pcm.phase_share_probabilities`); then distinct chunks with exactly these marginals."""

    Options = PCMSamplingOptions

    def select(
        self, phases: Tensor, lengths: Tensor, keep_probs: Tensor, budget: Tensor, generator: torch.Generator | None = None
    ) -> Selection:
        if self.options.allocation == "pooled":
            weights = keep_probs.to(phases.device)[phases.clamp(0, keep_probs.numel() - 1)]  # q_{phase(t)}  [N, T]
            return select_chunks(weights, lengths, budget, generator, self.options.order)

        def phase_shares(trajectory_phases: Tensor, trajectory_budget: int) -> Tensor:
            return phase_share_probabilities(trajectory_phases, keep_probs, trajectory_budget)

        return select_chunks(phases, lengths, budget, generator, self.options.order, rule=phase_shares)


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
