"""Gradient-equality helpers shared by the CPU and the CUDA learner tests: the gradient of a
compacted batch and the full batch that weighs every dropped chunk 0."""

from __future__ import annotations

import torch

from pcm_core.algo.grpo import group_advantages
from pcm_core.algo.pcm import compact
from pcm_core.types import CompactBatch, RolloutBatch, Selection


def gradient(learner, compact_batch: CompactBatch) -> torch.Tensor:
    """``[P]`` the learner's loss gradient on ``compact_batch`` (parameters left as they are)."""
    learner.optimizer.zero_grad(set_to_none=False)
    learner.backward(compact_batch)
    return torch.cat([p.grad.flatten() for p in learner.policy.module.parameters()]).clone()


def zero_weighted_full_batch(batch: RolloutBatch, learner, result) -> CompactBatch:
    """Every real chunk of ``batch``, weighted as ``result`` weighs its kept chunks and 0 elsewhere."""
    advantages = group_advantages(batch.rewards, batch.group_index)
    every = Selection(keep=batch.chunk_mask.clone(), inclusion_prob=batch.chunk_mask.double())
    weight = torch.zeros(batch.chunk_mask.shape, dtype=result.batch.weights.dtype)
    weight[result.batch.trajectory, result.batch.chunk] = result.batch.weights
    return compact(batch, every, advantages, weight[batch.chunk_mask])
