"""PCM: phase keep-probabilities, fixed-budget chunk sampling and compaction (the loss weights of
the kept chunks are in :mod:`pcm_core.algo.grpo`, beside the loss).

Shapes: ``N`` trajectories, ``T`` chunks (padded), ``P`` phases, ``L`` tokens per chunk,
``C`` kept chunks. Steps refer to ``docs/algorithm.md``.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
from torch import Tensor

from pcm_core.interfaces import BudgetSampler
from pcm_core.types import CompactBatch, PhaseScores, RolloutBatch, Selection

BudgetScaling = Literal["fixed", "length"]


def trajectory_budgets(lengths: Tensor, budget: int, scaling: BudgetScaling, horizon: int) -> Tensor:
    """Chunks each trajectory keeps, ``B_i`` ``[N]`` long (step 4).

    - ``fixed`` (the paper): ``B_i = min(B, T_i)``;
    - ``length``: ``B_i = min(T_i, max(1, round(B * T_i / horizon)))`` (round half to even, as
      ``torch.round``), so a trajectory that ends early (at its success) keeps the same fraction
      ``B / horizon`` as one that runs to the horizon.

    Args:
        lengths: ``[N]`` real chunks ``T_i``.
        budget: B, the budget of a trajectory that runs to the horizon.
        horizon: the most chunks an episode can have.
    """
    if scaling == "fixed":
        return lengths.clamp(max=budget)
    if scaling != "length":
        raise ValueError(f"unknown budget scaling '{scaling}' (expected 'fixed' or 'length')")
    scaled = torch.round(lengths.to(torch.float64) * budget / horizon).long().clamp(min=1)  # B T_i / T
    return torch.minimum(scaled, lengths)


class KeepProbabilities:
    """Phase keep-probabilities ``q`` ``[P]`` with PCM's three switchable mechanisms (step 3).

    - concentration: ``w_k = v_k / sum_j v_j`` (uniform when all ``v`` are 0, or when off);
    - exploration: ``w~_k = (1 - eps) w_k + eps / P`` (``w~ = w`` when off);
    - online: ``q <- (1 - eta) q + eta w~`` every step, starting from uniform; when off, ``q`` is
      set to the first observed batch's ``w~`` and then frozen.

    A step whose scores have no observation (no mixed group) leaves ``q`` unchanged.

    Attributes:
        q: ``[P]`` current keep-probabilities (sum 1).
        v: ``[P]`` the last observed scores ``v_k``; ``w``: ``[P]`` the last ``w~`` (for logging).
    """

    def __init__(
        self,
        num_phases: int,
        concentration: bool = True,
        exploration: bool = True,
        exploration_floor: float = 0.1,
        online: bool = True,
        ema: float = 0.3,
    ) -> None:
        self.num_phases = num_phases
        self.concentration = concentration
        self.exploration = exploration
        self.exploration_floor = exploration_floor
        self.online = online
        self.ema = ema
        self.q = torch.full((num_phases,), 1.0 / num_phases, dtype=torch.float64)  # q, uniform start
        self.v = torch.zeros(num_phases, dtype=torch.float64)
        self.w = self.q.clone()
        self.frozen = False

    def update(self, scores: PhaseScores) -> Tensor:
        """Fold one batch's scores into ``q``; returns ``q`` ``[P]`` (float64)."""
        if not scores.observed or self.frozen:
            return self.q
        uniform = torch.full_like(self.q, 1.0 / self.num_phases)  # 1/P  [P]
        v = scores.value.detach().to(self.q)  # v_k  [P]
        if not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
            raise ValueError(
                f"phase scores must be finite and >= 0, the variance proxy gave v = {v.tolist()}.\n"
                "Fix: make the proxy's PhaseScores.total non-negative and finite (or choose another pcm.proxy)"
            )
        w = v / v.sum() if self.concentration and v.sum() > 0 else uniform  # w_k  [P]
        if self.exploration:
            w = (1.0 - self.exploration_floor) * w + self.exploration_floor * uniform  # w~_k  [P]
        if self.online:
            self.q = (1.0 - self.ema) * self.q + self.ema * w  # q <- (1 - eta) q + eta w~
        else:
            self.q, self.frozen = w, True  # q = first estimate, then frozen
        self.v, self.w = v, w
        return self.q

    def state_dict(self) -> dict[str, Tensor | int]:
        return {"q": self.q.clone(), "v": self.v.clone(), "w": self.w.clone(), "frozen": int(self.frozen)}

    def load_state_dict(self, state: dict[str, Tensor | int]) -> None:
        self.q = torch.as_tensor(state["q"], dtype=torch.float64).clone()
        self.v = torch.as_tensor(state["v"], dtype=torch.float64).clone()
        self.w = torch.as_tensor(state["w"], dtype=torch.float64).clone()
        self.frozen = bool(state["frozen"])


def inclusion_probabilities(chunk_weights: Tensor, budget: int) -> Tensor:
    """Inclusion probabilities ``pi_t = min(1, c * weight_t)`` with ``sum_t pi_t = min(budget, T)``.

    Chunks whose ``pi`` would exceed 1 are capped at 1 and the rest of the budget is redistributed
    over the others, until no chunk exceeds 1 (at most ``budget`` rounds). Zero weights: when fewer
    than ``min(budget, T)`` chunks have a positive weight, every positive-weight chunk gets 1 and
    the remaining budget is spread uniformly over the zero-weight chunks (so all-zero weights give
    the uniform ``budget / T``); otherwise zero-weight chunks get 0.

    Args:
        chunk_weights: ``[T]`` non-negative weights (e.g. ``q`` of each chunk's phase).
        budget: B.

    Returns:
        ``[T]`` float64 ``pi`` in [0, 1].
    """
    weights = chunk_weights.detach().cpu().to(torch.float64)
    size = weights.numel()
    n = min(budget, size)  # chunks to draw
    positive = weights > 0
    num_positive = int(positive.sum())
    if num_positive <= n:
        rest = (n - num_positive) / max(size - num_positive, 1)  # budget left per zero-weight chunk
        return torch.where(positive, torch.ones_like(weights), torch.full_like(weights, rest))
    capped = torch.zeros_like(positive)
    while True:
        free = torch.where(capped, torch.zeros_like(weights), weights)  # weights not yet capped
        share = free / free.sum()  # w_t / sum of the uncapped w (no overflow for tiny weights)
        pi = torch.where(capped, torch.ones_like(weights), (n - int(capped.sum())) * share)  # pi_t = min(1, c w_t)
        over = pi > 1.0
        if not bool(over.any()):
            return pi
        capped |= over


def phase_share_probabilities(phases: Tensor, keep_probs: Tensor, budget: int) -> Tensor:
    """Inclusion probabilities with the budget shared out by phase (the ``per_phase`` allocation).

    Phase ``k`` of the trajectory gets the share ``s_k = B q_k / sum_j q_j`` of the budget (``j``
    over the phases the trajectory visits), spread evenly over its ``n_k`` chunks:
    ``pi_t = min(1, s_k / n_k)``. A phase with fewer chunks than its share keeps them all and the
    rest of its share is *not* given to other phases, so ``sum_t pi_t <= B``: a failure whose
    decisive phases are short keeps those and little of the long phase that no longer matters,
    instead of filling the budget from it.

    Args:
        phases: ``[T]`` long phase ids of the trajectory's real chunks (in ``0..P-1``).
        keep_probs: ``[P]`` keep-probabilities ``q``.
        budget: B.

    Returns:
        ``[T]`` float64 ``pi`` in [0, 1].
    """
    q = keep_probs.detach().cpu().to(torch.float64)
    phases = phases.detach().cpu().clamp(0, q.numel() - 1)
    counts = torch.bincount(phases, minlength=q.numel()).to(torch.float64)  # n_k  [P]
    visited = q * (counts > 0)  # q_k of the visited phases  [P]
    if float(visited.sum()) <= 0.0:  # no visited phase has weight: share evenly over the chunks
        return torch.full(phases.shape, min(1.0, budget / max(phases.numel(), 1)), dtype=torch.float64)
    share = budget * visited / visited.sum()  # s_k  [P]
    return (share / counts.clamp(min=1.0)).clamp(max=1.0)[phases]  # min(1, s_k / n_k)  [T]


SampleOrder = Literal["random", "time"]


def sample_exact(pi: Tensor, generator: torch.Generator | None = None, order: SampleOrder = "random") -> Tensor:
    """Draw distinct chunks with ``P(t kept) = pi_t`` exactly: ``k = round(sum pi)`` of them when the
    sum is an integer, otherwise its floor or its ceiling.

    Systematic sampling: lay the ``pi`` of the chunks end to end on ``[0, S)``, ``S = sum pi``, and
    keep the chunks hit by the points ``u, u + 1, ...`` below ``S``, with ``u ~ U[0, 1)``. Each
    interval has length ``pi_t <= 1``, so it is hit at most once, and with probability exactly ``pi_t``. ``order``
    says in which order the chunks are laid: ``random``, a random permutation (which chunks are
    kept together is random); ``time``, their time order (stratified: the kept chunks are spread
    over the trajectory, about one per unit of ``pi`` in every stretch of it).

    Args:
        pi: ``[T]`` inclusion probabilities in [0, 1] with an integer sum.
        generator: CPU generator for the permutation and ``u``.

    Returns:
        ``[k]`` long, sorted chunk indices.
    """
    total = float(pi.sum())
    if abs(total - round(total)) < 1e-6:  # an integer budget: exactly that many, float rounding absorbed
        total = float(round(total))
    k = math.ceil(total)  # points that may fall below S
    if k == 0:
        return torch.zeros(0, dtype=torch.long)
    if order == "random":
        laid = torch.randperm(pi.numel(), generator=generator)  # random permutation of the chunks
    elif order == "time":
        laid = torch.arange(pi.numel())
    else:
        raise ValueError(f"unknown sampling order '{order}' (expected 'random' or 'time')")
    ends = torch.cumsum(pi.detach().cpu().to(torch.float64)[laid], 0)  # interval ends on [0, S]
    ends[-1] = total  # absorb float rounding
    u = torch.rand((), generator=generator, dtype=torch.float64)  # u ~ U[0, 1)
    points = u + torch.arange(k, dtype=torch.float64)  # u, u + 1, ..., u + k - 1
    hit = torch.searchsorted(ends, points[points < total], right=True)  # interval containing each point below S
    return laid[hit].sort().values


ProbabilityRule = Callable[[Tensor, int], Tensor]
"""``rule(values, B_i)``: one trajectory's per-chunk values ``[T_i]`` and budget -> ``pi`` ``[T_i]``."""


def select_chunks(
    values: Tensor, lengths: Tensor, budget: Tensor | int, generator: torch.Generator | None = None,
    order: SampleOrder = "random", rule: ProbabilityRule = inclusion_probabilities,
) -> Selection:
    """Per trajectory: ``pi = rule(values of its real chunks, B_i)``, then ``sample_exact(pi)``.

    Args:
        values: ``[N, T]`` what ``rule`` reads per chunk: non-negative weights for the default
            :func:`inclusion_probabilities`, phase ids for :func:`phase_share_probabilities`
            (values on padding are ignored).
        lengths: ``[N]`` real chunks ``T_i``.
        budget: ``[N]`` chunks to keep of each trajectory, or one B for all.

    Returns:
        A :class:`Selection` with ``keep`` ``[N, T]`` and float64 ``inclusion_prob`` ``[N, T]``
        (False and 0 on padding).
    """
    keep = torch.zeros(values.shape, dtype=torch.bool)
    inclusion = torch.zeros(values.shape, dtype=torch.float64)
    budgets = torch.as_tensor(budget).expand(lengths.shape).tolist()  # B_i
    for i, length in enumerate(lengths.tolist()):
        pi = rule(values[i, :length], budgets[i])  # pi_t  [T_i]
        inclusion[i, :length] = pi
        keep[i, sample_exact(pi, generator, order)] = True
    return Selection(keep=keep, inclusion_prob=inclusion)


def select_per_trajectory(
    sampler: BudgetSampler, phases: Tensor, lengths: Tensor, keep_probs: Tensor, budgets: Tensor, seeds: Tensor
) -> Selection:
    """Run ``sampler`` on each trajectory alone, trajectory ``i`` with a generator seeded by
    ``seeds[i]``: its kept chunks depend on its own seed only, not on which other trajectories
    share the batch (or the rank).

    Args:
        phases: ``[N, T]``; lengths, budgets (``B_i``) and seeds: ``[N]`` long; keep_probs: ``[P]``.

    Returns:
        ``keep`` and ``inclusion_prob`` ``[N, T]``.
    """
    keeps, probs = [torch.zeros(0, phases.shape[1], dtype=torch.bool)], [torch.zeros(0, phases.shape[1], dtype=torch.float64)]
    for i, seed in enumerate(seeds.tolist()):
        generator = torch.Generator().manual_seed(int(seed))
        part = sampler.select(phases[i : i + 1], lengths[i : i + 1], keep_probs, budgets[i : i + 1], generator)
        keeps.append(part.keep)
        probs.append(part.inclusion_prob.to(torch.float64))
    return Selection(keep=torch.cat(keeps), inclusion_prob=torch.cat(probs))


def compact(batch: RolloutBatch, selection: Selection, advantages: Tensor, weights: Tensor) -> CompactBatch:
    """Gather only the kept chunks, trajectory-major in time order (the order of
    ``selection.keep.nonzero()``), with their advantages and loss weights.

    Args:
        batch: the rollouts ``[N, T, ...]``.
        selection: ``keep`` ``[N, T]``.
        advantages: ``[N]`` trajectory advantages.
        weights: ``[C]`` each kept chunk's loss weight, from :func:`pcm_core.algo.grpo.chunk_weights`.
    """
    traj, chunk = selection.keep.nonzero(as_tuple=True)  # source of each kept chunk  [C], [C]
    if weights.numel() != traj.numel():
        raise ValueError(f"compact got {weights.numel()} weights for {traj.numel()} kept chunks")
    return CompactBatch(
        obs={key: value[traj, chunk] for key, value in batch.obs.items()},
        instructions=[batch.instructions[i] for i in traj.tolist()],
        tokens=batch.tokens[traj, chunk],
        old_logprobs=batch.old_logprobs[traj, chunk],
        advantages=advantages[traj].to(batch.old_logprobs.dtype),
        weights=weights.to(batch.old_logprobs.dtype),
        trajectory=traj,
        chunk=chunk,
    )


def balanced_parts(batch: CompactBatch, num_parts: int) -> list[CompactBatch]:
    """``batch`` cut into ``num_parts`` contiguous micro-batches of near-equal size. A batch with
    fewer than ``num_parts`` chunks (one rank's share, when another rank kept more) repeats its
    first chunk with weight 0, so that every rank runs the same number of forwards.

    Args:
        batch: ``C`` kept chunks; num_parts: at least 1 when ``C > 0``.
    """
    size = len(batch)
    if num_parts == 0:
        return []
    if size == 0:
        raise ValueError(
            "this rank's budget sampler kept no chunk, so it has nothing to run its share of the backward passes on.\n"
            "Fix: make the sampler keep at least one chunk of every trajectory (pcm.sampler, pcm.budget)"
        )
    if size < num_parts:
        index = torch.cat([torch.arange(size), torch.zeros(num_parts - size, dtype=torch.long)])
        weights = torch.cat([batch.weights, torch.zeros(num_parts - size, dtype=batch.weights.dtype)])
        batch = CompactBatch(
            obs={key: value[index] for key, value in batch.obs.items()},
            instructions=[batch.instructions[i] for i in index.tolist()],
            tokens=batch.tokens[index],
            old_logprobs=batch.old_logprobs[index],
            advantages=batch.advantages[index],
            weights=weights,
            trajectory=batch.trajectory[index],
            chunk=batch.chunk[index],
        )
    bounds = torch.arange(len(batch)).tensor_split(num_parts)
    return [batch.slice(int(b[0]), int(b[-1]) + 1) for b in bounds]
