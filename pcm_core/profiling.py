"""Step timers, saved-activation accounting and CUDA peak memory."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


class StepTimer:
    """Accumulates wall-clock seconds per named section of a step (``time/<name>_s``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def section(self, name: str, device: torch.device | None = None) -> Iterator[None]:
        synchronize(device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(device)
            self.seconds[name] += time.perf_counter() - start

    def metrics(self) -> dict[str, float]:
        return {f"time/{name}_s": value for name, value in self.seconds.items()}


def synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class SavedActivationMeter:
    """Counts bytes of tensors autograd saves for backward, excluding the module's parameters.

    ``total_bytes`` sums over every forward run inside :meth:`measure` (all micro-batches of an
    update); ``peak_bytes`` is the largest single forward, the activations alive at once when
    micro-batches are processed one after another.
    """

    def __init__(self, module: nn.Module) -> None:
        local = [p.to_local() if hasattr(p, "to_local") else p for p in module.parameters()]  # FSDP: this rank's shard
        self._parameter_storages = {p.untyped_storage().data_ptr() for p in local}
        self.total_bytes = 0
        self.peak_bytes = 0

    @contextmanager
    def measure(self) -> Iterator[None]:
        seen: set[int] = set()
        current = 0

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            nonlocal current
            storage = tensor.untyped_storage()
            pointer = storage.data_ptr()
            if pointer not in seen and pointer not in self._parameter_storages:
                seen.add(pointer)
                current += storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            yield
        self.total_bytes += current
        self.peak_bytes = max(self.peak_bytes, current)


def cuda_peak_memory(device: torch.device) -> int | None:
    """Peak allocated CUDA bytes since the last reset, or None off CUDA."""
    if device.type != "cuda":
        return None
    return int(torch.cuda.max_memory_allocated(device))


def reset_cuda_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def eta_text(seconds: float) -> str:
    """``137.4`` -> ``"2m 17s"``: the time left on a progress line."""
    whole = round(seconds)
    return f"{whole // 60}m {whole % 60}s"
