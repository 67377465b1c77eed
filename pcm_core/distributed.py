"""Data-parallel learning over ``torch.distributed``: one process (rank) per device, launched by torchrun.

The global batch of a step is the union of the ranks' trajectories, split by whole groups (a
GRPO advantage only looks inside its group). Each step, :class:`DistributedLearner`:

1. scores the phases of its own trajectories and all-reduces the per-phase sums and counts
   (:class:`~pcm_core.types.PhaseScores`), so every rank folds the same scores into the same ``q``;
2. samples the chunks of its own trajectories, trajectory ``i`` with a generator seeded from a
   per-step seed shared by all ranks plus ``i``'s index in the global batch: which chunks are kept
   does not depend on the number of ranks;
3. sets the estimator weights with the global normaliser (kept chunks ``C`` for ``token_mean``,
   trajectories ``N`` otherwise) times the world size ``W``: DDP and FSDP average gradients over
   ranks, so ``mean_r W grad(loss_r) = sum_r grad(loss_r)``, the gradient of the one-process loss;
4. runs the same number of micro-batches on every rank (FSDP all-gathers weights in each forward;
   DDP reduces gradients once, in the last backward).

Nothing here is imported unless a run is launched by torchrun (or a test builds a process group).
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

import torch
from torch import Tensor, nn

from pcm_core.algo.grpo import group_advantages, uniform_groups
from pcm_core.algo.pcm import compact, trajectory_budgets
from pcm_core.config import DistributedConfig, PCMConfig, RunConfig, TrainConfig
from pcm_core.checkpoint import Checkpoint
from pcm_core.errors import PcmError
from pcm_core.interfaces import BudgetSampler, PhaseSegmenter, PolicyBackend, VarianceProxy
from pcm_core.learner import Learner, SelectionResult
from pcm_core.types import CompactBatch, PhaseScores, RolloutBatch, Selection

ROLLOUT_SEED_STRIDE = 1_000_003
"""Rank ``r`` seeds its rollouts (groups drawn, env, policy sampling) with ``train.seed + r * stride``."""


class DistributedError(PcmError):
    """A distributed setting that cannot work (two lines: problem, then fix)."""


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``active`` when a process group exists (even of one rank)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    active: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, artifacts and tracking; the others only train."""
        return self.rank == 0


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
    """Refuse a run whose step cannot be split over ``world`` ranks: every rank trains on whole
    groups, and every rollout actor of a rank runs whole groups of that rank's share. The CLI checks
    this before it starts torchrun, so the error comes once, not from every rank."""
    groups, workers = config.train.tasks_per_step, config.distributed.rollout_workers
    ranks = f"{world} rank{'s' if world > 1 else ''}"
    if groups < world:
        raise DistributedError(
            f"train.tasks_per_step = {groups} is below the {ranks} (--nproc {world}), and each rank trains on whole groups.\n"
            f"Fix: --set train.tasks_per_step={world} (or more), or --nproc {groups}"
        )
    smallest = groups // world  # groups of the smallest share
    if workers > smallest:
        raise DistributedError(
            f"distributed.rollout_workers = {workers} is more than the {smallest} groups a rank gets "
            f"(train.tasks_per_step = {groups} over {ranks}), and each actor runs whole groups.\n"
            f"Fix: --set distributed.rollout_workers={smallest} or fewer, or --set train.tasks_per_step={workers * world}"
        )


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


def full_tensors(saved: Checkpoint, context: Context) -> Checkpoint:
    """The checkpoint with every sharded (FSDP) tensor gathered into a full one; every rank calls
    this, in the same order, before rank 0 writes. Checkpoints never depend on the number of ranks."""
    if context.active:
        for group in saved.tensors.values():
            for name, value in group.items():
                if hasattr(value, "full_tensor"):
                    group[name] = value.full_tensor()
    return saved


def gather_for_rollouts(learner: Learner) -> None:
    """Under FSDP: gather the full weights, which rollouts need, after anything that reshards them
    (a ``state_dict()`` call for a checkpoint or a weight publish, a restore)."""
    if isinstance(learner, DistributedLearner) and learner.strategy == "fsdp":
        learner.unshard_all()


def before_restore(saved: Checkpoint, learner: Learner) -> None:
    """Under FSDP: lay the checkpoint's full policy and optimizer tensors out like the learner's
    sharded parameters (``DTensor``), so that ``load_state_dict`` takes them."""
    if not isinstance(learner, DistributedLearner) or learner.strategy != "fsdp":
        return
    from torch.distributed.tensor import DTensor, distribute_tensor

    learner.reshard_all()
    params = dict(learner.wrapper.policy_module.named_parameters())
    policy = saved.tensors["policy"]
    for name, value in policy.items():
        if isinstance(params.get(name), DTensor):
            policy[name] = distribute_tensor(value, params[name].device_mesh, params[name].placements)
    ordered = [p for group in learner.optimizer.param_groups for p in group["params"]]
    optimizer = saved.tensors["optimizer"]
    for key, value in optimizer.items():
        param = ordered[int(key.split("/")[1])]
        if isinstance(param, DTensor) and tuple(value.shape) == tuple(param.shape):
            optimizer[key] = distribute_tensor(value, param.device_mesh, param.placements)


def after_restore(
    learner: Learner, rng: np.random.Generator, generator: torch.Generator, local: RunConfig, step: int, context: Context
) -> None:
    """After a resume under torchrun: gather FSDP weights for the rollouts again, and give each rank
    its own rollout streams (the checkpoint holds rank 0's), seeded by its rollout seed and the step."""
    if not context.active:
        return
    gather_for_rollouts(learner)
    rng.bit_generator.state = np.random.default_rng([local.train.seed, step]).bit_generator.state
    generator.manual_seed(local.train.seed * 1_000_003 + step)


def shared_stop(signal: str | None, context: Context) -> str | None:
    """The stop request of any rank, on every rank, so that all ranks stop after the same step."""
    if any_rank(signal is not None, context) and signal is None:
        return "SIGTERM"
    return signal


def release(learner: Learner) -> None:
    """End of training under FSDP: the policy holds plain full tensors again (FSDP's unsharded
    parameters are views into its all-gather buffers, which ``policy.save`` cannot write). Every rank
    calls this; shared parameters stay shared."""
    if not isinstance(learner, DistributedLearner) or learner.strategy != "fsdp":
        return
    learner.reshard_all()  # the parameters as FSDP's DTensors, whatever the last call left
    plain: dict[int, nn.Parameter] = {}
    for module in learner.wrapper.policy_module.modules():
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            if id(param) not in plain:
                full = param.full_tensor() if hasattr(param, "full_tensor") else param
                plain[id(param)] = nn.Parameter(full.detach().clone(), requires_grad=param.requires_grad)
            module._parameters[name] = plain[id(param)]


def rollout_workers(
    local: RunConfig, components: dict[str, Any], policy: PolicyBackend, log: Callable[[str], Any] = print
) -> Any:
    """Ray rollout actors for this rank when ``distributed.rollout_workers > 0`` (else None)."""
    if local.distributed.rollout_workers == 0:
        return None
    from pcm_core.ray_rollouts import RayRollouts

    return RayRollouts(local, components, policy, log=log)


def broadcast_object(value: Any, context: Context) -> Any:
    """Rank 0's ``value`` on every rank (e.g. the run folder it created)."""
    if not context.active:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool, context: Context) -> bool:
    """True on every rank when ``flag`` is True on at least one (e.g. a stop request)."""
    if not context.active:
        return flag
    import torch.distributed as dist

    value = torch.tensor([float(flag)], device=_comm_device(context))
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


@contextlib.contextmanager
def main_first(context: Context) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. fills a cache), the other ranks after it finished."""
    import torch.distributed as dist

    if context.active and not context.is_main:
        dist.barrier()
    yield
    if context.active and context.is_main:
        dist.barrier()


def _comm_device(context: Context) -> torch.device:
    """Where collective tensors live: the rank's GPU under NCCL, the CPU under gloo."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Tensor, context: Context) -> Tensor:
    """``[n]`` float64 sums over ranks (returned on the CPU)."""
    import torch.distributed as dist

    values = values.detach().to(device=_comm_device(context), dtype=torch.float64).clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu()


def reduce_scores(scores: PhaseScores, context: Context) -> PhaseScores:
    """Per-phase sums and counts added over ranks: the scores of the global batch (``[P]`` each)."""
    num_phases = scores.total.numel()
    summed = all_reduce_sum(torch.cat([scores.total.double(), scores.count.double()]), context)
    return PhaseScores(total=summed[:num_phases].to(scores.total.dtype), count=summed[num_phases:].round().long())


def group_shard(group_index: Tensor, rank: int, world_size: int) -> Tensor:
    """Trajectory indices ``[N_r]`` of rank ``rank``: the sorted group ids cut into ``world_size``
    contiguous blocks (sizes differ by at most one group)."""
    groups = torch.unique(group_index, sorted=True)
    if groups.numel() < world_size:
        raise DistributedError(
            f"the batch has {groups.numel()} groups for {world_size} ranks, and each rank trains on whole groups.\n"
            f"Fix: --set train.tasks_per_step={world_size} (or more), or launch fewer ranks"
        )
    mine = groups.tensor_split(world_size)[rank]
    return torch.nonzero(torch.isin(group_index, mine)).squeeze(1)


def select_per_trajectory(
    sampler: BudgetSampler, phases: Tensor, lengths: Tensor, keep_probs: Tensor, budget: Tensor, seeds: Tensor
) -> Selection:
    """Run ``sampler`` on each trajectory alone with a generator seeded by ``seeds[i]``.

    Args:
        phases: ``[N, T]``; lengths, budget (``B_i``) and seeds: ``[N]`` long; keep_probs: ``[P]``.

    Returns:
        ``keep`` and ``inclusion_prob`` ``[N, T]``, independent of which other trajectories share the batch.
    """
    keeps, probs = [], []
    for i, seed in enumerate(seeds.tolist()):
        generator = torch.Generator().manual_seed(int(seed))
        part = sampler.select(phases[i : i + 1], lengths[i : i + 1], keep_probs, budget[i : i + 1], generator)
        keeps.append(part.keep)
        probs.append(part.inclusion_prob)
    return Selection(keep=torch.cat(keeps), inclusion_prob=torch.cat(probs))


def balanced_parts(batch: CompactBatch, micro_batch_size: int, num_parts: int) -> list[CompactBatch]:
    """``num_parts`` contiguous micro-batches of near-equal size (each at most ``micro_batch_size``
    when ``num_parts >= ceil(C / micro_batch_size)``). A rank with fewer than ``num_parts`` chunks
    repeats its first chunk with weight 0 so that it still runs ``num_parts`` forwards."""
    size = len(batch)
    if size == 0:
        raise DistributedError(
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


class LogProbModule(nn.Module):
    """``forward(obs, instructions, tokens) = policy.log_probs(...)`` ``[B, L]``, with the policy's
    module as a submodule: what DDP / FSDP wrap, so their hooks see every forward and backward."""

    def __init__(self, policy: PolicyBackend) -> None:
        super().__init__()
        self.policy_module = policy.module
        self._log_probs = policy.log_probs

    def forward(self, obs: dict[str, Tensor], instructions: list[str], tokens: Tensor) -> Tensor:
        return self._log_probs(obs, instructions, tokens)


class RoutedPolicy:
    """The learner's view of a policy: ``log_probs`` runs through the data-parallel wrapper,
    every other attribute is the policy's own."""

    def __init__(self, policy: PolicyBackend, wrapper: nn.Module) -> None:
        self._policy = policy
        self._wrapper = wrapper

    def log_probs(self, obs: dict[str, Tensor], instructions: list[str], tokens: Tensor) -> Tensor:
        return self._wrapper(obs, instructions, tokens)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._policy, name)


def _broadcast_module(module: nn.Module, context: Context) -> None:
    """Rank 0's parameters and buffers on every rank (each rank may have warm-started differently)."""
    import torch.distributed as dist

    device = _comm_device(context)
    for tensor in [*module.parameters(), *module.buffers()]:
        data = tensor.data.to(device)
        dist.broadcast(data, src=0)
        tensor.data.copy_(data)


class DistributedLearner(Learner):
    """:class:`~pcm_core.learner.Learner` on one rank's share of the global batch (see the module docstring).

    ``strategy`` ``ddp`` keeps a full replica per rank; ``fsdp`` shards parameters, gradients and
    optimizer state with FSDP2 ``fully_shard`` (the whole policy is one unit) and gathers the full
    weights after each update for the rollouts.
    """

    def __init__(
        self,
        policy: PolicyBackend,
        segmenter: PhaseSegmenter,
        proxy: VarianceProxy,
        sampler: BudgetSampler,
        pcm: PCMConfig,
        train: TrainConfig,
        context: Context,
        strategy: str = "ddp",
    ) -> None:
        if strategy == "fsdp" and train.kl_coef > 0:
            raise DistributedError(
                f"train.kl_coef = {train.kl_coef} needs a reference policy, which distributed.strategy = fsdp does not shard.\n"
                "Fix: --set distributed.strategy=ddp, or --set train.kl_coef=0"
            )
        self.context = context
        self.strategy = strategy
        _broadcast_module(policy.module, context)
        wrapper: nn.Module = LogProbModule(policy)
        if strategy == "fsdp":
            wrapper = self._shard(wrapper, policy.device)
        super().__init__(policy, segmenter, proxy, sampler, pcm, train)  # the optimizer sees the sharded parameters
        if strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [policy.device.index] if policy.device.type == "cuda" else None
            wrapper = DistributedDataParallel(wrapper, device_ids=device_ids)
        self.wrapper = wrapper
        self.policy = RoutedPolicy(policy, wrapper)  # type: ignore[assignment]
        if strategy == "fsdp":
            self.unshard_all()  # after the optimizer took the sharded parameters: full weights to act
        self._global_counts = torch.zeros(6, dtype=torch.float64)

    def _shard(self, wrapper: nn.Module, device: torch.device) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (self.context.world_size,))
        fully_shard(wrapper, mesh=mesh)  # one unit: rollouts call the policy's blocks outside FSDP's hooks
        return wrapper

    def unshard_all(self) -> None:
        """FSDP: gather every unit's full weights so the policy can act between updates."""
        from torch.distributed.fsdp import FSDPModule

        for module in self.wrapper.modules():
            if isinstance(module, FSDPModule):
                module.unshard()

    def reshard_all(self) -> None:
        """FSDP: back to sharded parameters (``DTensor``), e.g. to load a checkpoint."""
        from torch.distributed.fsdp import FSDPModule

        for module in self.wrapper.modules():
            if isinstance(module, FSDPModule):
                module.reshard()

    def _trajectory_offset(self, num_local: int) -> tuple[int, int]:
        """(index of this rank's first trajectory in the global batch, global ``N``)."""
        counts = torch.zeros(self.context.world_size, dtype=torch.float64)
        counts[self.context.rank] = num_local
        counts = all_reduce_sum(counts, self.context).long()
        return int(counts[: self.context.rank].sum()), int(counts.sum())

    def select(self, batch: RolloutBatch) -> SelectionResult:
        """Advantages (within this rank's whole groups), globally reduced phase scores, the shared
        q update, per-trajectory sampling and weights normalised over the global batch."""
        advantages = group_advantages(batch.rewards, batch.group_index)  # A_i  [N_r]
        phases = self.segmenter.segment(batch)  # k(i, t)  [N_r, T]
        scores = reduce_scores(self.proxy.score(batch, phases, self.segmenter.num_phases), self.context)
        keep_probs = self.keep_probs.update(scores)  # q_k  [P], the same on every rank
        step_seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))  # same on every rank
        offset, num_global = self._trajectory_offset(batch.num_trajectories)
        seeds = step_seed + offset + torch.arange(batch.num_trajectories)  # one stream per global trajectory
        budgets = trajectory_budgets(batch.lengths, self.pcm.budget, self.pcm.budget_scaling, batch.horizon_chunks)  # B_i  [N_r]
        selection = select_per_trajectory(self.sampler, phases, batch.lengths, keep_probs, budgets, seeds)
        compact_batch = compact(batch, selection, advantages, self.pcm.estimator, self.train.loss_aggregation)
        kept_local = int(selection.keep.sum())
        uniform = uniform_groups(batch.rewards, batch.group_index)  # [M_r]
        local = torch.tensor(
            [kept_local, batch.num_trajectories, float(batch.rewards.sum()), float((~uniform).sum()),
             uniform.numel(), float(batch.lengths.sum())],
            dtype=torch.float64,
        )
        self._global_counts = all_reduce_sum(local, self.context)  # C, N, successes, mixed groups, groups, chunks
        kept_global = int(self._global_counts[0])
        if self.pcm.estimator == "masked" and self.train.loss_aggregation == "token_mean":
            share = kept_local / kept_global  # 1 / (L C_r) -> 1 / (L C)
        else:
            share = batch.num_trajectories / num_global  # 1 / N_r -> 1 / N
        compact_batch.weights = compact_batch.weights * (share * self.context.world_size)  # x W: gradients are averaged
        return SelectionResult(advantages, phases, scores, keep_probs.clone(), selection, compact_batch)

    def backward(self, batch: CompactBatch) -> dict[str, float]:
        """The same number of micro-batches on every rank; gradients are reduced in the last one."""
        wanted = torch.zeros(self.context.world_size, dtype=torch.float64)
        wanted[self.context.rank] = math.ceil(max(len(batch), 1) / self.train.micro_batch_size)
        num_parts = int(all_reduce_sum(wanted, self.context).max())
        parts = balanced_parts(batch, self.train.micro_batch_size, num_parts)
        totals = {"loss": 0.0, "clip_fraction": 0.0}
        for i, part in enumerate(parts):
            with self._gradient_sync(i == len(parts) - 1):
                result = super().backward(part)  # one micro-batch: len(part) <= micro_batch_size
            totals["loss"] += result["loss"]
            totals["clip_fraction"] += result["clip_fraction"] * len(part) / max(len(batch), 1)
        return totals

    def _gradient_sync(self, sync: bool) -> contextlib.AbstractContextManager[Any]:
        if self.strategy == "fsdp":
            self.wrapper.set_requires_gradient_sync(sync)  # type: ignore[operator]
            return contextlib.nullcontext()
        return contextlib.nullcontext() if sync else self.wrapper.no_sync()  # type: ignore[operator]

    def _update_is_finite(self, loss: float, grad_norm: Any) -> bool:
        """Finite on every rank: one rank's NaN loss skips the step everywhere, so the replicas
        stay equal and every rank counts the same skips."""
        return not any_rank(not super()._update_is_finite(loss, grad_norm), self.context)

    def update(self, batch: RolloutBatch, timer: Any) -> dict[str, float]:
        metrics = super().update(batch, timer)
        if self.strategy == "fsdp":
            self.unshard_all()
        return metrics

    def _metrics(
        self, batch: RolloutBatch, result: SelectionResult, losses: dict[str, float], grad_norm: Any, device: torch.device
    ) -> dict[str, float]:
        """The base metrics with global values where they describe the batch (loss, success, kept
        chunks); activation bytes stay per rank."""
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a replicated DTensor
            grad_norm = grad_norm.full_tensor()
        metrics = super()._metrics(batch, result, losses, float(grad_norm), device)
        kept, trajectories, successes, mixed, groups, chunks = self._global_counts.tolist()
        local = torch.tensor(
            [losses.get("loss", 0.0), losses.get("clip_fraction", 0.0) * len(result.batch)], dtype=torch.float64
        )
        loss, clipped = all_reduce_sum(local, self.context).tolist()
        metrics.update(
            {
                "success_rate": successes / max(trajectories, 1),
                "mixed_group_fraction": mixed / max(groups, 1),
                "kept_chunk_fraction": kept / max(chunks, 1),
                "kept_chunks": kept,
                "loss": loss / self.context.world_size,  # the weights carry a factor W
                "clip_fraction": clipped / max(kept, 1),
                "ranks": float(self.context.world_size),
            }
        )
        return metrics


def make_learner(
    context: Context, config: RunConfig, policy: PolicyBackend, segmenter: PhaseSegmenter,
    proxy: VarianceProxy, sampler: BudgetSampler,
) -> Learner:
    """The learner for this process: :class:`DistributedLearner` inside a process group, else the plain one."""
    if not context.active:
        return Learner(policy, segmenter, proxy, sampler, config.pcm, config.train)
    return DistributedLearner(
        policy, segmenter, proxy, sampler, config.pcm, config.train, context, config.distributed.strategy
    )
