"""Collectives over the ranks of a run. In one process every collective is the identity, so the
learner runs the same lines with one rank and with many (docs/distributed.md).

``torch.distributed`` is imported only when a process group exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pcm_core.types import PhaseScores


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


class Communicator:
    """Sums, maxima and broadcasts over the ranks of ``context``; the identity when it is inactive."""

    def __init__(self, context: Context | None = None) -> None:
        self.context = context or Context()

    @property
    def active(self) -> bool:
        return self.context.active

    @property
    def rank(self) -> int:
        return self.context.rank

    @property
    def world_size(self) -> int:
        return self.context.world_size

    def device(self) -> torch.device:
        """Where collective tensors live: the rank's GPU under NCCL, the CPU under gloo."""
        import torch.distributed as dist

        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _reduce(self, values: Tensor, op: str) -> Tensor:
        values = values.detach().to(dtype=torch.float64).clone()
        if not self.active:
            return values.cpu()
        import torch.distributed as dist

        values = values.to(self.device())
        dist.all_reduce(values, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return values.cpu()

    def sum(self, values: Tensor) -> Tensor:
        """``[n]`` float64 sums over ranks (on the CPU)."""
        return self._reduce(values, "sum")

    def max(self, values: Tensor) -> Tensor:
        """``[n]`` float64 maxima over ranks (on the CPU)."""
        return self._reduce(values, "max")

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on at least one (a stop request, a NaN)."""
        return bool(self.max(torch.tensor([float(flag)])).item() > 0)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (e.g. the run folder it created)."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def offset(self, count: int) -> tuple[int, int]:
        """(sum of ``count`` over the ranks before this one, sum over all ranks): where this rank's
        items start in the global order, and how many there are."""
        counts = torch.zeros(self.world_size, dtype=torch.float64)
        counts[self.rank] = count
        counts = self.sum(counts).long()
        return int(counts[: self.rank].sum()), int(counts.sum())

    def sum_scores(self, scores: PhaseScores) -> PhaseScores:
        """Per-phase sums and counts added over ranks: the scores of the global batch (``[P]`` each)."""
        if not self.active:
            return scores
        num_phases = scores.total.numel()
        summed = self.sum(torch.cat([scores.total.double(), scores.count.double()]))
        return PhaseScores(total=summed[:num_phases].to(scores.total.dtype), count=summed[num_phases:].round().long())
