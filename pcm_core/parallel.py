"""Data-parallel strategies of the learner: what differs between one process, DDP and FSDP2.

:class:`SingleProcess` is the default and does nothing; :class:`DDP` replicates the policy on every
rank and averages gradients; :class:`FSDP` shards parameters, gradients and optimizer state with
FSDP2 ``fully_shard`` (the whole policy is one unit) and gathers the full weights for rollouts.
The learner calls the same hooks in every case (docs/distributed.md). ``torch.distributed`` is
imported only by the strategies that need it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from pcm_core.communicator import Communicator
from pcm_core.interfaces import PolicyBackend

TensorGroups = dict[str, dict[str, Tensor]]
"""A checkpoint's tensors: file stem (``policy``, ``optimizer``, ...) -> ``{name: tensor}``."""


class SingleProcess:
    """One process: the policy as it is, every hook a no-op."""

    name = "single"

    def setup(self, policy: PolicyBackend, comm: Communicator, frozen: PolicyBackend | None = None) -> None:
        """Before the optimizer sees the parameters (FSDP shards them here). ``frozen`` (the KL
        reference, a copy made before this call) stays a full replica on every rank; it gets rank
        0's weights like the policy."""

    def route(self, policy: PolicyBackend) -> PolicyBackend:
        """The learner's view of ``policy``: its ``log_probs`` through the wrapper, if any."""
        return policy

    def gradient_sync(self, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """Around one micro-batch's forward/backward; gradients are reduced when ``sync``."""
        return contextlib.nullcontext()

    def full_tensor(self, value: Tensor) -> Tensor:
        """A plain tensor from a (possibly sharded or replicated) one, e.g. the gradient norm."""
        return value.full_tensor() if hasattr(value, "full_tensor") else value

    def full_value(self, value: Tensor) -> float:
        return float(self.full_tensor(value))

    def after_update(self) -> None:
        """After the optimizer step: the policy must be able to act again."""

    def gather_for_rollouts(self) -> None:
        """After anything that reshards the weights (a checkpoint's ``state_dict``, a restore)."""

    def full_tensors(self, tensors: TensorGroups) -> TensorGroups:
        """``tensors`` with every sharded tensor gathered (every rank calls this, in the same order)."""
        return tensors

    def before_restore(self, tensors: TensorGroups, optimizer: torch.optim.Optimizer) -> None:
        """Lay a checkpoint's tensors out like the learner's parameters before ``load_state_dict``."""

    def release(self) -> None:
        """End of training: the policy holds plain full tensors (``policy.save`` writes them)."""


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


def broadcast_module(module: nn.Module, comm: Communicator) -> None:
    """Rank 0's parameters and buffers on every rank (each rank may have warm-started differently)."""
    import torch.distributed as dist

    device = comm.device()
    for tensor in [*module.parameters(), *module.buffers()]:
        data = tensor.data.to(device)
        dist.broadcast(data, src=0)
        tensor.data.copy_(data)


def broadcast_weights(policy: PolicyBackend, frozen: PolicyBackend | None, comm: Communicator) -> None:
    """Rank 0's weights in ``policy`` and, given, in its frozen copy (the KL reference)."""
    for module in [policy.module] + ([frozen.module] if frozen is not None else []):
        broadcast_module(module, comm)


class DDP(SingleProcess):
    """A full replica per rank; gradients are averaged in the last micro-batch's backward."""

    name = "ddp"

    def setup(self, policy: PolicyBackend, comm: Communicator, frozen: PolicyBackend | None = None) -> None:
        broadcast_weights(policy, frozen, comm)

    def route(self, policy: PolicyBackend) -> PolicyBackend:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [policy.device.index] if policy.device.type == "cuda" else None
        self.wrapper = DistributedDataParallel(LogProbModule(policy), device_ids=device_ids)
        return RoutedPolicy(policy, self.wrapper)  # type: ignore[return-value]

    def gradient_sync(self, sync: bool) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext() if sync else self.wrapper.no_sync()


class FSDP(SingleProcess):
    """FSDP2 ``fully_shard`` over all ranks, the whole policy one unit (rollouts call the policy's
    blocks outside FSDP's hooks, so the full weights stay gathered between updates)."""

    name = "fsdp"

    def setup(self, policy: PolicyBackend, comm: Communicator, frozen: PolicyBackend | None = None) -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        broadcast_weights(policy, frozen, comm)
        self.wrapper = LogProbModule(policy)
        fully_shard(self.wrapper, mesh=init_device_mesh(policy.device.type, (comm.world_size,)))

    def route(self, policy: PolicyBackend) -> PolicyBackend:
        self.unshard_all()  # after the optimizer took the sharded parameters: full weights to act
        return RoutedPolicy(policy, self.wrapper)  # type: ignore[return-value]

    def _units(self) -> list[Any]:
        from torch.distributed.fsdp import FSDPModule

        return [module for module in self.wrapper.modules() if isinstance(module, FSDPModule)]

    def unshard_all(self) -> None:
        """Gather every unit's full weights so the policy can act between updates."""
        for module in self._units():
            module.unshard()

    def reshard_all(self) -> None:
        """Back to sharded parameters (``DTensor``), e.g. to load a checkpoint."""
        for module in self._units():
            module.reshard()

    def gradient_sync(self, sync: bool) -> contextlib.AbstractContextManager[Any]:
        self.wrapper.set_requires_gradient_sync(sync)  # type: ignore[operator]
        return contextlib.nullcontext()

    def after_update(self) -> None:
        self.unshard_all()

    def gather_for_rollouts(self) -> None:
        self.unshard_all()

    def full_tensors(self, tensors: TensorGroups) -> TensorGroups:
        for group in tensors.values():
            for name, value in group.items():
                if hasattr(value, "full_tensor"):
                    group[name] = value.full_tensor()
        return tensors

    def before_restore(self, tensors: TensorGroups, optimizer: torch.optim.Optimizer) -> None:
        from torch.distributed.tensor import DTensor, distribute_tensor

        self.reshard_all()
        params = dict(self.wrapper.policy_module.named_parameters())
        policy = tensors["policy"]
        for name, value in policy.items():
            if isinstance(params.get(name), DTensor):
                policy[name] = distribute_tensor(value, params[name].device_mesh, params[name].placements)
        ordered = [p for group in optimizer.param_groups for p in group["params"]]
        moments = tensors["optimizer"]
        for key, value in moments.items():
            param = ordered[int(key.split("/")[1])]
            if isinstance(param, DTensor) and tuple(value.shape) == tuple(param.shape):
                moments[key] = distribute_tensor(value, param.device_mesh, param.placements)

    def release(self) -> None:
        """FSDP's unsharded parameters are views into its all-gather buffers, which ``policy.save``
        cannot write: every module gets plain full parameters back (shared ones stay shared)."""
        self.reshard_all()  # the parameters as FSDP's DTensors, whatever the last call left
        plain: dict[int, nn.Parameter] = {}
        for module in self.wrapper.policy_module.modules():
            for name, param in list(module._parameters.items()):
                if param is None:
                    continue
                if id(param) not in plain:
                    full = param.full_tensor() if hasattr(param, "full_tensor") else param
                    plain[id(param)] = nn.Parameter(full.detach().clone(), requires_grad=param.requires_grad)
                module._parameters[name] = plain[id(param)]


STRATEGIES: dict[str, type[SingleProcess]] = {"ddp": DDP, "fsdp": FSDP}
"""``distributed.strategy`` -> strategy class, under torchrun."""
