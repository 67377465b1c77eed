"""Variance proxies: score each phase by how much its chunks can teach (docs/algorithm.md, step 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pcm_core.interfaces import Options, VarianceProxy
from pcm_core.types import PhaseScores, RolloutBatch


class NoOptions(Options):
    """This component takes no options."""


def _phase_onehot(batch: RolloutBatch, phases: Tensor, num_phases: int) -> Tensor:
    """``[N, T, P]`` float one-hot phase of every real chunk (all zeros on padding)."""
    mask = batch.chunk_mask  # real chunks  [N, T]
    onehot = F.one_hot(torch.where(mask, phases, 0).clamp(0, num_phases - 1), num_phases)  # [N, T, P]
    return (onehot * mask[..., None]).to(batch.actions.dtype)


class SuccessFailureProxy(VarianceProxy):
    """Between-outcome action variance per phase, over groups with mixed outcomes.

    For group ``m`` with success fraction ``p_m`` and phase ``k`` occurring in both its successful
    and its failed trajectories: ``v_{m,k} = p_m (1 - p_m) ||mu^S_{m,k} - mu^F_{m,k}||^2 / D``, with
    ``mu`` the mean over every executed action ``[K, D]`` of the phase's chunks on that side.
    ``total_k`` sums ``v_{m,k}`` over such groups and ``count_k`` counts them. A trajectory succeeds
    when its reward is above 0.5.
    """

    Options = NoOptions

    def score(self, batch: RolloutBatch, phases: Tensor, num_phases: int) -> PhaseScores:
        dtype = batch.actions.dtype
        _, group = torch.unique(batch.group_index, sorted=True, return_inverse=True)  # dense m  [N]
        member = F.one_hot(group).to(dtype)  # trajectory i in group m  [N, M]
        success = (batch.rewards > 0.5).to(dtype)  # [N]
        p = (success @ member) / member.sum(0)  # p_m  [M]
        onehot = _phase_onehot(batch, phases, num_phases)  # [N, T, P]
        action_sum = batch.actions.sum(2)  # sum over the K actions of each chunk  [N, T, D]
        actions_per_chunk = batch.actions.shape[2]  # K
        means = []
        for side in (success, 1.0 - success):
            member_side = member * side[:, None]  # [N, M]
            total = torch.einsum("nm,ntp,ntd->mpd", member_side, onehot, action_sum)  # [M, P, D]
            count = torch.einsum("nm,ntp->mp", member_side, onehot) * actions_per_chunk  # actions  [M, P]
            means.append((total / count.clamp(min=1)[..., None], count > 0))
        (mu_s, has_s), (mu_f, has_f) = means  # mu^S, mu^F  [M, P, D]
        mixed = (p > 0) & (p < 1)  # groups with mixed outcomes  [M]
        counts = has_s & has_f & mixed[:, None]  # (m, k) that count  [M, P]
        v = (p * (1 - p))[:, None] * (mu_s - mu_f).pow(2).mean(-1)  # v_{m,k}  [M, P]
        return PhaseScores(total=torch.where(counts, v, torch.zeros_like(v)).sum(0), count=counts.sum(0))


class UniformProxy(VarianceProxy):
    """Every phase scores 1 (ablation: keep-probabilities stay uniform)."""

    Options = NoOptions

    def score(self, batch: RolloutBatch, phases: Tensor, num_phases: int) -> PhaseScores:
        ones = torch.ones(num_phases)
        return PhaseScores(total=ones, count=ones.long())


class EntropyProxy(VarianceProxy):
    """Policy-uncertainty baseline: the mean sampling entropy of each phase's real chunks.

    ``total_k`` sums ``batch.entropy`` over the phase's chunks and ``count_k`` counts the chunks.
    """

    Options = NoOptions

    def score(self, batch: RolloutBatch, phases: Tensor, num_phases: int) -> PhaseScores:
        onehot = _phase_onehot(batch, phases, num_phases).to(batch.entropy.dtype)  # [N, T, P]
        total = torch.einsum("nt,ntp->p", batch.entropy, onehot)  # sum of entropies  [P]
        return PhaseScores(total=total, count=onehot.sum((0, 1)).long())
