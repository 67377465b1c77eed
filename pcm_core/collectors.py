"""Collectors: where a step's episodes run, behind one interface.

:class:`Collector` runs them in this process, on an env that may itself spread its envs over
worker processes (``env.workers``, :class:`~pcm_core.vector_env.SubprocessEnv`);
:class:`~pcm_core.ray_rollouts.RayRollouts` runs them in Ray actors. Both draw a step's groups,
refill groups with equal outcomes (dynamic sampling) and evaluate the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pcm_core.algo.grpo import uniform_groups
from pcm_core.config import RunConfig
from pcm_core.interfaces import EnvBackend, PolicyBackend
from pcm_core.learner import policy_precision
from pcm_core.rollout import GroupSpec, collect, concat
from pcm_core.types import RolloutBatch

EVAL_INIT_OFFSET = 1_000_000
"""Evaluation initial states are ids from here on, never drawn for training."""

DYNAMIC_SAMPLING_ROUNDS = 3
"""Extra rounds of groups dynamic sampling draws, at most, to replace groups with equal outcomes."""


@dataclass
class Evaluation:
    """One evaluation: the success rate over every episode, and the first batch of episodes
    (``batch`` with one trajectory per entry of ``groups``), what the evaluation videos show."""

    success_rate: float
    batch: RolloutBatch
    groups: list[GroupSpec]


def draw_groups(rng: np.random.Generator, env: EnvBackend, count: int) -> list[GroupSpec]:
    """``count`` training groups: random task variants and fresh initial states."""
    tasks = rng.integers(0, env.num_tasks, count)
    inits = rng.integers(0, EVAL_INIT_OFFSET, count)
    return [GroupSpec(int(t), int(i)) for t, i in zip(tasks, inits)]


def mixed_members(batch: RolloutBatch) -> torch.Tensor:
    """Indices of trajectories whose group has mixed outcomes."""
    uniform = uniform_groups(batch.rewards, batch.group_index)  # [M], sorted group ids
    mixed_ids = batch.group_index.unique()[~uniform]
    return torch.nonzero(torch.isin(batch.group_index, mixed_ids)).squeeze(1)


class Collector:
    """A step's episodes in this process.

    Args:
        env: the vector env (evaluation always runs on it).
        policy: the policy that acts (the learner's, updated in place).
        config: this rank's view of the run (its ``tasks_per_step``, its seed).
        rng: draws the groups of each step; generator: the policy's sampling.
    """

    def __init__(
        self, env: EnvBackend, policy: PolicyBackend, config: RunConfig, rng: np.random.Generator, generator: torch.Generator
    ) -> None:
        self.env = env
        self.policy = policy
        self.config = config
        self.rng = rng
        self.generator = generator

    def collect(self, groups: list[GroupSpec], group_size: int, greedy: bool = False) -> RolloutBatch:
        """The episodes of ``groups``, ``group_size`` each."""
        return collect(self.env, self.policy, groups, group_size, self.generator, greedy=greedy)

    def step_batch(self) -> RolloutBatch:
        """One step's groups; with dynamic sampling, groups with equal outcomes are replaced by
        fresh ones (up to :data:`DYNAMIC_SAMPLING_ROUNDS` extra rounds) so that every group carries
        a learning signal."""
        train = self.config.train
        with policy_precision(self.policy.device, train):
            batch = self.collect(draw_groups(self.rng, self.env, train.tasks_per_step), train.group_size)
            if not train.dynamic_sampling:
                return batch
            kept = [batch.select_trajectories(mixed_members(batch))]
            have = int(kept[0].group_index.unique().numel()) if kept[0].num_trajectories else 0
            for _ in range(DYNAMIC_SAMPLING_ROUNDS):
                if have >= train.tasks_per_step:
                    break
                extra = self.collect(draw_groups(self.rng, self.env, train.tasks_per_step), train.group_size)
                kept.append(extra.select_trajectories(mixed_members(extra)))
                have += int(kept[-1].group_index.unique().numel()) if kept[-1].num_trajectories else 0
        kept = [b for b in kept if b.num_trajectories]
        if not kept:
            return batch
        merged = concat(kept)
        groups = merged.group_index.unique()[: train.tasks_per_step]
        return merged.select_trajectories(torch.nonzero(torch.isin(merged.group_index, groups)).squeeze(1))

    def evaluate(self) -> Evaluation:
        """Success rate on ``train.eval_episodes`` fixed initial states (the same at every call,
        for every seed), in this process; the first batch of episodes comes back for videos."""
        train = self.config.train
        episodes = train.eval_episodes
        generator = torch.Generator().manual_seed(train.seed + EVAL_INIT_OFFSET)
        successes: list[float] = []
        first: tuple[RolloutBatch, list[GroupSpec]] | None = None
        for start in range(0, episodes, self.env.num_envs):
            ids = [start + i for i in range(self.env.num_envs)]
            groups = [GroupSpec(i % self.env.num_tasks, EVAL_INIT_OFFSET + i) for i in ids]
            with policy_precision(self.policy.device, train):
                batch = collect(self.env, self.policy, groups, 1, generator, greedy=train.eval_greedy)
            successes.extend(batch.rewards.tolist()[: episodes - start])
            if first is None:
                count = min(episodes, len(groups))
                first = (batch.select_trajectories(torch.arange(count)), groups[:count])
        assert first is not None
        return Evaluation(float(np.mean(successes)), *first)

    def publish(self) -> dict[str, float]:
        """After an update: hand the new weights to wherever episodes run (here they are shared);
        returns the rollout metrics since the last publish."""
        return {}

    def fault_metrics(self, batch: RolloutBatch) -> dict[str, float]:
        """Env workers restarted so far and trajectories this step lost to them."""
        return {"faults/env_restarts": float(getattr(self.env, "restarts", 0)), "faults/dropped_trajectories": float(batch.dropped)}

    def close(self) -> None:
        """Release what the collector started (the env is the caller's)."""

