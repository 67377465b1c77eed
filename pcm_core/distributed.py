"""Data-parallel runs under torchrun: joining the process group, each rank's share of the run, and
the learner of a rank.

One process (rank) per device. The global batch of a step is the union of the ranks'
trajectories, split by whole groups (a GRPO advantage only looks inside its group). The learner is
the same :class:`~pcm_core.learner.Learner` as in one process, with a
:class:`~pcm_core.communicator.Communicator` over the process group and a DDP or FSDP strategy
(:mod:`pcm_core.parallel`): every rank folds the same summed phase scores into the same ``q``,
samples its trajectories' chunks from per-trajectory streams (so the kept chunks do not depend on
the number of ranks), and weights its chunks with the global normalisers times ``W`` (gradients
are averaged over ranks, so ``mean_r W grad(loss_r) = sum_r grad(loss_r)``).

``torch.distributed`` is imported only when a run is launched by torchrun (or a test builds a
process group).
"""

from __future__ import annotations

import datetime
import os

import numpy as np
import torch

from pcm_core.communicator import Communicator, Context
from pcm_core.config import DistributedConfig, RunConfig, rank_problem
from pcm_core.errors import PcmError
from pcm_core.interfaces import BudgetSampler, PhaseSegmenter, PolicyBackend, VarianceProxy
from pcm_core.learner import Learner
from pcm_core.parallel import STRATEGIES

ROLLOUT_SEED_STRIDE = 1_000_003
"""Rank ``r`` seeds its rollouts (groups drawn, env, policy sampling) with ``train.seed + r * stride``."""


class DistributedError(PcmError):
    """A distributed setting that cannot work (two lines: problem, then fix)."""


def launched() -> bool:
    """True in a process started by torchrun (it sets ``RANK``, ``WORLD_SIZE`` and ``MASTER_ADDR``)."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR"))


def setup(config: DistributedConfig, device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group when launched by torchrun; returns the context and this rank's device
    (``cuda:LOCAL_RANK`` on GPUs). Outside torchrun: an inactive context and ``device`` unchanged."""
    if not launched():
        return Context(), device
    import torch.distributed as dist

    backend = config.backend if config.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if backend == "nccl" and device.type != "cuda":
        raise DistributedError(
            f"distributed.backend = nccl needs CUDA devices, train.device resolves to '{device}'.\n"
            "Fix: --set distributed.backend=gloo on CPU, or run on GPUs"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and local_rank >= torch.cuda.device_count():
        raise DistributedError(
            f"rank {local_rank} on this machine has no GPU: only {torch.cuda.device_count()} are visible.\n"
            f"Fix: --nproc {torch.cuda.device_count()} (one rank per GPU), or --set train.device=cpu"
        )
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=config.timeout_s))
    return Context(dist.get_rank(), dist.get_world_size(), local_rank, active=True), device


def shutdown(context: Context) -> None:
    """Leave the process group (after the run, on every rank)."""
    import torch.distributed as dist

    if context.active and dist.is_initialized():
        dist.destroy_process_group()


def check_ranks(config: RunConfig, world: int) -> None:
    """Refuse a run whose step cannot be split over ``world`` ranks (:func:`~pcm_core.config.rank_problem`).
    The CLI checks this before it starts torchrun, so the error comes once, not from every rank."""
    problem = rank_problem(config, world)
    if problem is not None:
        raise DistributedError(problem)


def local_config(config: RunConfig, context: Context) -> RunConfig:
    """This rank's view of the run: its share of ``tasks_per_step`` groups, its own rollout seed,
    tracking on rank 0 only. The learner keeps the global config (same seed on every rank)."""
    if not context.active:
        return config
    groups, world, rank = config.train.tasks_per_step, context.world_size, context.rank
    check_ranks(config, world)
    share = groups // world + int(rank < groups % world)
    train = config.train.model_copy(
        update={"tasks_per_step": share, "seed": config.train.seed + ROLLOUT_SEED_STRIDE * rank}
    )
    tracking = config.tracking if context.is_main else config.tracking.model_copy(update={"enabled": False})
    return config.model_copy(update={"train": train, "tracking": tracking})


def reseed_rollouts(rng: np.random.Generator, generator: torch.Generator, local: RunConfig, step: int) -> None:
    """After a resume under torchrun: each rank's own rollout streams (the checkpoint holds rank 0's),
    seeded by its rollout seed and the step."""
    rng.bit_generator.state = np.random.default_rng([local.train.seed, step]).bit_generator.state
    generator.manual_seed(local.train.seed * 1_000_003 + step)


def make_learner(
    context: Context, config: RunConfig, policy: PolicyBackend, segmenter: PhaseSegmenter,
    proxy: VarianceProxy, sampler: BudgetSampler,
) -> Learner:
    """The learner of this process: inside a process group, with its collectives and the
    ``distributed.strategy`` (DDP or FSDP); else the plain one-process learner."""
    if not context.active:
        return Learner(policy, segmenter, proxy, sampler, config.pcm, config.train)
    strategy = STRATEGIES[config.distributed.strategy]()
    return Learner(policy, segmenter, proxy, sampler, config.pcm, config.train, Communicator(context), strategy)
