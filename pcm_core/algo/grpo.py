"""The whole loss: group-relative advantages, the chunk weights (aggregation and estimator) and the
PPO-clip token loss (clip-higher, optional k3 KL).

Shapes: ``N`` trajectories, ``M`` groups, ``C`` chunks in a (compact) batch, ``L`` tokens per chunk.
The loss is always ``sum_c weights_c * sum_l token_loss_{c,l}``: the per-chunk weights of
:func:`chunk_weights` carry the whole normalisation (token mean, sequence mean, importance
weights), so summing the losses of micro-batches, or of ranks, gives the loss of the full batch.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from pcm_core.types import Selection

Estimator = Literal["masked", "iw", "stratified"]
Aggregation = Literal["token_mean", "seq_mean", "traj_sum"]


def _group_ids(group_index: Tensor) -> tuple[Tensor, int]:
    """Dense ids ``[N]`` in ``0..M-1`` (sorted group-id order) and the number of groups ``M``."""
    unique, dense = torch.unique(group_index, sorted=True, return_inverse=True)
    return dense, int(unique.numel())


def uniform_groups(rewards: Tensor, group_index: Tensor) -> Tensor:
    """``[M]`` bool, True for groups whose outcomes are all equal (they carry no GRPO signal).

    Args:
        rewards: ``[N]`` outcome rewards.
        group_index: ``[N]`` group id of each trajectory; the result follows sorted group-id order.
    """
    dense, num_groups = _group_ids(group_index)
    rewards = rewards.float()
    high = torch.full((num_groups,), -torch.inf, dtype=rewards.dtype, device=rewards.device)
    low = torch.full((num_groups,), torch.inf, dtype=rewards.dtype, device=rewards.device)
    high = high.scatter_reduce(0, dense, rewards, reduce="amax")  # max_m R  [M]
    low = low.scatter_reduce(0, dense, rewards, reduce="amin")  # min_m R  [M]
    return high == low


def group_advantages(rewards: Tensor, group_index: Tensor, eps: float = 1e-6) -> Tensor:
    """GRPO advantage ``A_i = (R_i - mean_m R) / (std_m R + eps)``, shared by all chunks of trajectory i.

    ``std_m`` is the *unbiased* sample standard deviation (Bessel's correction, ``torch.std``'s
    default, as in TRL's GRPO trainer). Groups whose outcomes are all equal (including groups of
    one trajectory) get exactly 0.

    Args:
        rewards: ``[N]`` outcome rewards ``R_i``.
        group_index: ``[N]`` group id ``m`` of each trajectory (any integers).

    Returns:
        ``[N]`` advantages.
    """
    dense, num_groups = _group_ids(group_index)
    rewards = rewards if rewards.is_floating_point() else rewards.float()
    zeros = torch.zeros(num_groups, dtype=rewards.dtype, device=rewards.device)
    size = zeros.index_add(0, dense, torch.ones_like(rewards))  # G_m  [M]
    total = zeros.index_add(0, dense, rewards)  # sum_m R  [M]
    mean = (total / size)[dense]  # mean_m R  [N]
    squares = zeros.index_add(0, dense, (rewards - mean) ** 2)  # sum_m (R - mean)^2  [M]
    std = (squares / (size - 1).clamp(min=1)).sqrt()[dense]  # std_m R (unbiased)  [N]
    advantages = (rewards - mean) / (std + eps)  # A_i  [N]
    return torch.where(uniform_groups(rewards, group_index)[dense], torch.zeros_like(advantages), advantages)


def chunk_weights(
    selection: Selection,
    lengths: Tensor,
    tokens_per_chunk: int,
    estimator: Estimator = "masked",
    aggregation: Aggregation = "token_mean",
    num_trajectories: int | None = None,
    num_kept: int | None = None,
    world_size: int = 1,
    phases: Tensor | None = None,
) -> Tensor:
    """The loss weight ``w_c`` of every kept chunk, in the order of ``selection.keep.nonzero()``.

    For trajectory ``i`` of ``T_i`` chunks with ``kept_i`` kept, ``N`` trajectories, ``C`` kept
    chunks and ``L`` tokens per chunk:

    - ``masked`` + ``token_mean``: ``w = 1 / (L * C)``, the mean over all kept tokens;
    - ``masked`` + ``seq_mean``: ``w = 1 / (N * L * kept_i)``, the mean over trajectories of each
      trajectory's kept-token mean;
    - ``masked`` + ``traj_sum``: ``w = 1 / (N * L * T_i)``, each trajectory's kept-token sum over
      its full token count;
    - ``iw`` (Horvitz-Thompson): ``w = 1 / (N * L * T_i * pi_t)`` whatever ``aggregation`` says:
      the unbiased estimator of the ``traj_sum`` GRPO loss (equal to it when every ``pi_t = 1``)
      as long as every real chunk has ``pi_t > 0``; chunks a sampler never draws (``topk``, or a
      phase with ``q_k = 0`` when the exploration floor is off) are missing from its expectation.
    - ``stratified``: ``w = n_ik / (N * L * T_i * kept_ik)`` whatever ``aggregation`` says, with
      ``n_ik`` the real chunks of trajectory ``i`` in the kept chunk's phase ``k`` and ``kept_ik``
      those kept: the kept chunks of a phase stand for all of its chunks, so every phase with a
      kept chunk carries exactly its ``traj_sum`` GRPO weight ``n_ik / (N L T_i)`` (the push on the
      phase, sum_c w_c A_c, is GRPO's whatever the sampler concentrates on), and no chunk weighs
      more than its trajectory's share of that phase. Needs ``phases``.

    With every chunk kept, ``masked`` is plain GRPO with the same aggregation.

    Args:
        selection: ``keep`` and ``inclusion_prob`` ``[N_r, T]`` of this process's trajectories.
        lengths: ``[N_r]`` real chunks ``T_i``.
        num_trajectories, num_kept: ``N`` and ``C`` of the global batch (all ranks); default: this batch's.
        world_size: ranks whose gradients are averaged (DDP / FSDP); the weights carry this factor,
            so the average of the ranks' gradients is the gradient of the one-process loss.
        phases: ``[N_r, T]`` phase ids of the chunks (``stratified`` only).

    Returns:
        ``[C_r]`` float64 weights.
    """
    traj, chunk = selection.keep.nonzero(as_tuple=True)  # source of each kept chunk  [C_r], [C_r]
    num_trajectories = selection.keep.shape[0] if num_trajectories is None else num_trajectories  # N
    num_kept = traj.numel() if num_kept is None else num_kept  # C
    length = lengths.to(torch.float64)[traj]  # T_i  [C_r]
    if estimator == "iw":
        pi = selection.inclusion_prob.to(torch.float64)[traj, chunk]  # pi_t  [C_r]
        weights = 1.0 / (num_trajectories * tokens_per_chunk * length) / pi  # 1 / (N L T_i pi_t)
    elif estimator == "stratified":
        if phases is None:
            raise ValueError("the stratified estimator needs the chunks' phases")
        real = torch.arange(phases.shape[1], device=traj.device)[None, :] < lengths.to(traj.device)[:, None]  # [N_r, T]
        phase_ids = torch.where(real, phases.to(traj.device).long().clamp(min=0), 0)  # padding: any value, read as 0
        num_phases = int(phase_ids.max()) + 1 if phase_ids.numel() else 1
        in_phase = torch.zeros(phase_ids.shape[0], num_phases, dtype=torch.float64, device=traj.device)
        in_phase.scatter_add_(1, phase_ids, real.to(torch.float64))  # n_ik  [N_r, P]
        kept_in_phase = torch.zeros_like(in_phase).scatter_add_(1, phase_ids, selection.keep.to(torch.float64))  # kept_ik
        k = phase_ids[traj, chunk]  # phase of each kept chunk  [C_r]
        share = in_phase[traj, k] / kept_in_phase[traj, k]  # n_ik / kept_ik  [C_r]
        weights = share.to(length.device) / (num_trajectories * tokens_per_chunk * length)  # n_ik / (N L T_i kept_ik)
    elif estimator != "masked":
        raise ValueError(f"unknown estimator '{estimator}' (expected 'masked', 'iw' or 'stratified')")
    elif aggregation == "token_mean":
        weights = torch.full_like(length, 1.0 / (tokens_per_chunk * max(num_kept, 1)))  # 1 / (L C)
    elif aggregation == "seq_mean":
        kept = selection.keep.sum(1).to(torch.float64)[traj]  # kept_i  [C_r]
        weights = 1.0 / (num_trajectories * tokens_per_chunk * kept)  # 1 / (N L kept_i)
    elif aggregation == "traj_sum":
        weights = 1.0 / (num_trajectories * tokens_per_chunk * length)  # 1 / (N L T_i)
    else:
        raise ValueError(f"unknown aggregation '{aggregation}' (expected token_mean, seq_mean or traj_sum)")
    return weights * world_size


def ppo_clip_token_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, clip_low: float, clip_high: float
) -> Tensor:
    """Per-token PPO-clip loss ``-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)``.

    Args:
        logprobs: ``[C, L]`` log pi_theta of the sampled tokens (with gradients).
        old_logprobs: ``[C, L]`` behaviour log-probabilities log pi_old.
        advantages: ``[C]`` advantage of each chunk's trajectory.
        clip_low, clip_high: eps_low and eps_high (clip-higher: eps_high >= eps_low).

    Returns:
        ``[C, L]`` token losses.
    """
    ratio = torch.exp(logprobs - old_logprobs)  # r  [C, L]
    advantage = advantages[:, None]  # A  [C, 1]
    unclipped = ratio * advantage  # r A  [C, L]
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantage  # clip(r) A  [C, L]
    return -torch.minimum(unclipped, clipped)  # [C, L]


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k3 estimator of KL(pi_theta || pi_ref) per token: ``exp(d) - d - 1`` with ``d = ref - logp``.

    Args:
        logprobs, ref_logprobs: ``[C, L]``.

    Returns:
        ``[C, L]`` non-negative per-token KL estimates.
    """
    delta = ref_logprobs - logprobs  # d = log pi_ref - log pi_theta  [C, L]
    return torch.exp(delta) - delta - 1.0  # k3  [C, L]


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    weights: Tensor,
    clip_low: float,
    clip_high: float,
    ref_logprobs: Tensor | None = None,
    kl_coef: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``loss = sum_c weights_c * sum_l (token_loss_{c,l} + kl_coef * kl_{c,l})``.

    Args:
        logprobs, old_logprobs: ``[C, L]``; ``ref_logprobs``: ``[C, L]`` or None (no KL term).
        advantages: ``[C]``; weights: ``[C]`` the estimator weight of each chunk (full normalisation).

    Returns:
        The scalar loss and detached stats: ``clip_fraction`` (share of tokens whose ratio lies
        outside the clip range), ``approx_kl`` (mean k3 estimate of KL(pi_old || pi_theta)) and,
        with a reference and ``kl_coef > 0``, ``ref_kl`` (mean k3 KL to the reference).
    """
    token_loss = ppo_clip_token_loss(logprobs, old_logprobs, advantages, clip_low, clip_high)  # [C, L]
    stats: dict[str, Tensor] = {}
    if ref_logprobs is not None and kl_coef > 0.0:
        ref_kl = kl_k3(logprobs, ref_logprobs)  # [C, L]
        token_loss = token_loss + kl_coef * ref_kl
        stats["ref_kl"] = ref_kl.detach().mean()
    loss = (weights[:, None] * token_loss).sum()  # sum_c w_c sum_l loss_{c,l}
    with torch.no_grad():
        ratio = torch.exp(logprobs - old_logprobs)  # r  [C, L]
        outside = (ratio < 1.0 - clip_low) | (ratio > 1.0 + clip_high)
        stats["clip_fraction"] = outside.to(ratio.dtype).mean()
        stats["approx_kl"] = kl_k3(old_logprobs, logprobs).mean()  # (r - 1) - log r, KL(pi_old || pi_theta)
    return loss, stats
