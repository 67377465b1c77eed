"""Data containers passed between rollout, PCM selection and the learner.

Shape letters used throughout the project:

- ``N``: trajectories in a step (``tasks_per_step * group_size``)
- ``T``: chunks per trajectory, padded to the longest trajectory of the batch
- ``K``: actions per chunk, ``D``: action dimensions, ``L``: action tokens per chunk
- ``P``: phases, ``C``: kept chunks after selection (the compact batch)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class ActionSpec:
    """What a policy emits per call: ``chunk_size`` (K) actions of ``action_dim`` (D) numbers in [-1, 1]."""

    chunk_size: int
    action_dim: int = 7


@dataclass
class PolicyOutput:
    """One batched policy call on ``B`` observations.

    Attributes:
        actions: ``[B, K, D]`` what the environment executes, in its own units.
        tokens: ``[B, L]`` sampled action-token ids (the RL "actions").
        logprobs: ``[B, L]`` behaviour log-probabilities of ``tokens``.
        entropy: ``[B]`` mean per-token entropy of the sampling distribution.
        normalized_actions: ``[B, K, D]`` the same actions on the [-1, 1] scale (the env's gripper
            convention kept), what the rollout stores for phase segmenters and proxies; None when
            ``actions`` already are on that scale.
    """

    actions: Tensor
    tokens: Tensor
    logprobs: Tensor
    entropy: Tensor
    normalized_actions: Tensor | None = None

    @property
    def stored_actions(self) -> Tensor:
        """``[B, K, D]`` the actions a rollout keeps: ``normalized_actions``, else ``actions``."""
        return self.actions if self.normalized_actions is None else self.normalized_actions


@dataclass
class RolloutBatch:
    """``N`` trajectories of a step, padded to ``T`` chunks.

    Attributes:
        obs: observation tensors as the environment returned them, each ``[N, T, ...]``
            (e.g. ``image`` uint8 ``[N, T, H, W, 3]``, ``proprio`` float ``[N, T, P_dim]``).
        instructions: ``N`` language instructions.
        actions: ``[N, T, K, D]`` executed actions on the [-1, 1] scale
            (:attr:`PolicyOutput.stored_actions`).
        tokens: ``[N, T, L]`` sampled action tokens.
        old_logprobs: ``[N, T, L]`` behaviour log-probabilities.
        entropy: ``[N, T]`` mean token entropy at sampling time.
        lengths: ``[N]`` number of real chunks ``T_i`` of each trajectory.
        rewards: ``[N]`` outcome reward (1.0 success, 0.0 failure).
        group_index: ``[N]`` group id ``m`` of each trajectory (same task and initial state).
        info: per-chunk environment info, each ``[N, T, ...]`` (e.g. ``phase`` labels, ``gripper``).
        dropped: trajectories collected for this batch but left out because their env worker
            died (and group members left too few to compare); not among the ``N``.
        horizon: the most chunks an episode can have (the env's step limit over ``K``); None: ``T``.
        policy_s: seconds the policy spent choosing the chunks (``act``), summed over the
            collections (and rollout processes) that made the batch; the rest of a rollout's
            time is the env's (simulation, rendering) and the bookkeeping.
    """

    obs: dict[str, Tensor]
    instructions: list[str]
    actions: Tensor
    tokens: Tensor
    old_logprobs: Tensor
    entropy: Tensor
    lengths: Tensor
    rewards: Tensor
    group_index: Tensor
    info: dict[str, Tensor] = field(default_factory=dict)
    dropped: int = 0
    horizon: int | None = None
    policy_s: float = 0.0

    @property
    def num_trajectories(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def max_chunks(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def horizon_chunks(self) -> int:
        """The episode horizon in chunks: ``horizon``, or ``T`` when the batch does not know it."""
        return self.max_chunks if self.horizon is None else self.horizon

    @property
    def chunk_mask(self) -> Tensor:
        """``[N, T]`` True for real chunks, False for padding."""
        steps = torch.arange(self.max_chunks, device=self.lengths.device)
        return steps[None, :] < self.lengths[:, None]

    def select_trajectories(self, index: Tensor) -> "RolloutBatch":
        """Return the sub-batch of trajectories ``index`` (``[N']`` long)."""
        idx = index.tolist()
        return RolloutBatch(
            obs={k: v[index] for k, v in self.obs.items()},
            instructions=[self.instructions[i] for i in idx],
            actions=self.actions[index],
            tokens=self.tokens[index],
            old_logprobs=self.old_logprobs[index],
            entropy=self.entropy[index],
            lengths=self.lengths[index],
            rewards=self.rewards[index],
            group_index=self.group_index[index],
            info={k: v[index] for k, v in self.info.items()},
            dropped=self.dropped,
            horizon=self.horizon,
            policy_s=self.policy_s,
        )


@dataclass
class Selection:
    """Which chunks take part in the update.

    Attributes:
        keep: ``[N, T]`` bool, True for kept chunks (always False on padding).
        inclusion_prob: ``[N, T]`` probability ``pi_t`` that the sampler keeps each chunk
            (0 on padding); the importance-weighted estimator divides by it.
    """

    keep: Tensor
    inclusion_prob: Tensor


@dataclass
class CompactBatch:
    """The kept chunks only, flattened: nothing of a dropped chunk is in here.

    Attributes:
        obs: each ``[C, ...]``.
        instructions: ``C`` instructions (one per kept chunk).
        tokens: ``[C, L]`` action tokens to score.
        old_logprobs: ``[C, L]``.
        advantages: ``[C]`` the trajectory advantage ``A_i`` of each chunk.
        weights: ``[C]`` estimator weight of each chunk; the loss is
            ``sum_c weights_c * sum_l token_loss_{c,l}``.
        trajectory: ``[C]`` index of the source trajectory, ``chunk``: ``[C]`` its time index.
    """

    obs: dict[str, Tensor]
    instructions: list[str]
    tokens: Tensor
    old_logprobs: Tensor
    advantages: Tensor
    weights: Tensor
    trajectory: Tensor
    chunk: Tensor

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def slice(self, start: int, stop: int) -> "CompactBatch":
        """Chunks ``start:stop``, for micro-batching."""
        return CompactBatch(
            obs={k: v[start:stop] for k, v in self.obs.items()},
            instructions=self.instructions[start:stop],
            tokens=self.tokens[start:stop],
            old_logprobs=self.old_logprobs[start:stop],
            advantages=self.advantages[start:stop],
            weights=self.weights[start:stop],
            trajectory=self.trajectory[start:stop],
            chunk=self.chunk[start:stop],
        )


@dataclass
class PhaseScores:
    """Per-phase divergence statistics of one batch, kept as sums so ranks can all-reduce them.

    Attributes:
        total: ``[P]`` sum of per-group scores ``v_{m,k}`` over the groups that count.
        count: ``[P]`` number of groups that contributed to each phase.
    """

    total: Tensor
    count: Tensor

    @property
    def value(self) -> Tensor:
        """``[P]`` mean score ``v_k`` (0 where no group contributed)."""
        return torch.where(self.count > 0, self.total / self.count.clamp(min=1), torch.zeros_like(self.total))

    @property
    def observed(self) -> bool:
        """True when at least one phase received a score from this batch."""
        return bool((self.count > 0).any())
