"""One rank of the learner parity test: a float64 tiny policy trained on its share of a fixed global batch."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "algo"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.common
from tiny_policy import TinyBackend, make_batch  # noqa: E402

from benchmarks.common import group_shard  # noqa: E402
from pcm_core.config import PCMConfig, TrainConfig  # noqa: E402
from pcm_core.profiling import StepTimer  # noqa: E402
from pcm_phases.proxies import SuccessFailureProxy  # noqa: E402
from pcm_phases.samplers import AllSampler, PCMSampler  # noqa: E402
from pcm_phases.segmenters import GripperSegmenter  # noqa: E402

STEPS = 2


def global_batch(step: int):
    """4 groups of 2 with mixed outcomes in 3 of them; a different batch at each step."""
    return make_batch([6, 9, 4, 8, 9, 5, 7, 3], [1, 0, 0, 1, 1, 1, 0, 1], [0, 0, 1, 1, 2, 2, 3, 3], seed=step)


def parts(sampler: str):
    pcm = PCMConfig(budget=3, sampler=sampler, segmenter_options={"num_phases": 3})
    train = TrainConfig(lr=0.05, micro_batch_size=3, max_grad_norm=1e9, seed=7, kl_coef=0.01)  # with a KL reference
    segmenter = GripperSegmenter(GripperSegmenter.Options(num_phases=3))
    proxy = SuccessFailureProxy(SuccessFailureProxy.Options())
    chosen = PCMSampler(PCMSampler.Options()) if sampler == "pcm" else AllSampler(AllSampler.Options())
    return segmenter, proxy, chosen, pcm, train


def rank_learner(rank: int, world_size: int, strategy: str, segmenter, proxy, chosen, pcm, train):
    """The learner of one rank: a communicator over the process group and the ``strategy``."""
    from pcm_core.communicator import Communicator, Context
    from pcm_core.learner import Learner
    from pcm_core.parallel import STRATEGIES

    comm = Communicator(Context(rank, world_size, rank, active=True))
    # each rank starts from other weights: the learner must put rank 0's into the policy and the KL reference
    return Learner(TinyBackend(seed=rank), segmenter, proxy, chosen, pcm, train, comm, STRATEGIES[strategy]())


def train_steps(learner, shard) -> dict:
    """``STEPS`` updates; returns losses, q and the kept-chunk masks of each step, and the final
    flat parameters."""
    losses, qs, masks = [], [], []
    select = learner.select

    def recording_select(batch):
        result = select(batch)
        masks.append(result.selection.keep.clone())
        return result

    learner.select = recording_select
    for step in range(STEPS):
        batch = global_batch(step)
        metrics = learner.update(shard(batch), StepTimer())
        losses.append(metrics["loss"])
        qs.append(learner.keep_probs.q.clone())
    params = torch.cat([p.detach().flatten() for p in learner.policy.module.parameters()])
    reference = torch.cat([p.detach().flatten() for p in learner.reference.module.parameters()])
    return {"loss": losses, "q": torch.stack(qs), "params": params, "keep": masks, "reference": reference}


def run_rank(rank: int, world_size: int, sampler: str, strategy: str, folder: str) -> None:
    """Entry point for ``torch.multiprocessing.spawn``: writes ``rank_<r>.pt`` into ``folder``."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size)
    learner = rank_learner(rank, world_size, strategy, *parts(sampler))
    result = train_steps(learner, lambda b: b.select_trajectories(group_shard(b.group_index, rank, world_size)))
    if strategy == "fsdp":
        result["params"] = torch.cat([p.detach().flatten() for p in learner.parallel.wrapper.parameters()])
    torch.save(result, f"{folder}/rank_{rank}.pt")
    dist.destroy_process_group()


def run_rank_with_a_nan(rank: int, world_size: int, folder: str) -> None:
    """Like :func:`run_rank` (DDP, pcm), but rank 1's first update reports a NaN loss."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size)
    learner = rank_learner(rank, world_size, "ddp", *parts("pcm"))
    if rank == 1:
        backward, calls = learner.backward, []

        def nan_at_first(batch):
            totals = backward(batch)
            calls.append(1)
            return {**totals, "loss": float("nan")} if len(calls) == 1 else totals

        learner.backward = nan_at_first
    result = train_steps(learner, lambda b: b.select_trajectories(group_shard(b.group_index, rank, world_size)))
    result["skipped"] = learner.skipped_updates
    torch.save(result, f"{folder}/rank_{rank}.pt")
    dist.destroy_process_group()


def run_single(sampler: str) -> dict:
    """The plain one-process learner on the whole global batch."""
    from pcm_core.learner import Learner

    segmenter, proxy, chosen, pcm, train = parts(sampler)
    learner = Learner(TinyBackend(), segmenter, proxy, chosen, pcm, train)
    return train_steps(learner, lambda b: b)


if __name__ == "__main__":  # under torchrun: python -m torch.distributed.run ... parity_worker.py SAMPLER FOLDER
    import os

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # torchrun's env:// rendezvous
    rank, world_size = dist.get_rank(), dist.get_world_size()
    learner = rank_learner(rank, world_size, "ddp", *parts(sys.argv[1]))
    result = train_steps(learner, lambda b: b.select_trajectories(group_shard(b.group_index, rank, world_size)))
    torch.save(result, os.path.join(sys.argv[2], f"rank_{rank}.pt"))
    dist.destroy_process_group()
