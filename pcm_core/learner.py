"""One PCM-GRPO update: score phases -> update keep-probabilities -> sample -> compact -> backprop.

GRPO is the same learner with the ``all`` sampler: one code path, only the selection differs.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pcm_core import checkpoint
from pcm_core.algo.grpo import chunk_weights, group_advantages, policy_loss, uniform_groups
from pcm_core.algo.pcm import KeepProbabilities, balanced_parts, compact, select_per_trajectory, trajectory_budgets
from pcm_core.communicator import Communicator
from pcm_core.config import PCMConfig, TrainConfig
from pcm_core.interfaces import BudgetSampler, PhaseSegmenter, PolicyBackend, VarianceProxy
from pcm_core.parallel import SingleProcess
from pcm_core.profiling import SavedActivationMeter, StepTimer, cuda_peak_memory, reset_cuda_peak
from pcm_core.types import CompactBatch, PhaseScores, RolloutBatch, Selection


@dataclass
class SelectionResult:
    """What the score+select stage decided for one batch."""

    advantages: Tensor  # [N]
    phases: Tensor  # [N, T]
    scores: PhaseScores
    keep_probs: Tensor  # [P]
    selection: Selection
    batch: CompactBatch


def policy_precision(device: torch.device, train: TrainConfig) -> torch.autocast:
    """bf16 autocast on CUDA when ``train.dtype`` is ``bfloat16``, else a no-op. Rollouts, the
    reference and the update all run under it, so an unchanged policy gives ratios of exactly 1."""
    enabled = device.type == "cuda" and train.dtype == "bfloat16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


class Learner:
    """Holds the optimizer, PCM's keep-probabilities and the sampling generator: one learner for one
    process and for every rank of a data-parallel run.

    ``comm`` carries the few collectives of a step (phase-score sums, global counts, the NaN
    guard); in one process each is the identity. ``parallel`` is the data-parallel strategy (DDP,
    FSDP) behind the policy's ``log_probs``; :class:`~pcm_core.parallel.SingleProcess` by default.
    Masks are drawn per trajectory, from a stream seeded by the step's seed and the trajectory's
    index in the global batch, so they do not depend on the number of ranks.
    """

    def __init__(
        self,
        policy: PolicyBackend,
        segmenter: PhaseSegmenter,
        proxy: VarianceProxy,
        sampler: BudgetSampler,
        pcm: PCMConfig,
        train: TrainConfig,
        comm: Communicator | None = None,
        parallel: SingleProcess | None = None,
    ) -> None:
        self.comm = comm or Communicator()
        self.parallel = parallel or SingleProcess()
        self.segmenter = segmenter
        self.proxy = proxy
        self.sampler = sampler
        self.pcm = pcm
        self.train = train
        self.keep_probs = KeepProbabilities(
            num_phases=segmenter.num_phases,
            concentration=pcm.concentration,
            exploration=pcm.exploration,
            exploration_floor=pcm.exploration_floor,
            online=pcm.online,
            ema=pcm.ema,
        )
        # the KL reference is copied before FSDP shards the policy: a full frozen replica per rank
        self.reference = self._frozen_copy(policy) if train.kl_coef > 0 else None
        self.parallel.setup(policy, self.comm, self.reference)  # rank 0's weights everywhere; FSDP shards here
        self.optimizer = torch.optim.AdamW(
            [p for p in policy.module.parameters() if p.requires_grad], lr=train.lr, betas=train.adam_betas,
            weight_decay=train.weight_decay,
        )
        self.generator = torch.Generator().manual_seed(train.seed + 1)
        self.policy = self.parallel.route(policy)  # log_probs through the DDP / FSDP wrapper
        self.meter = SavedActivationMeter(policy.module)
        self.skipped_updates = 0  # optimizer steps skipped for a non-finite loss or gradient, in all
        self.consecutive_skips = 0  # ... since the last applied step
        self._global_counts = torch.zeros(7, dtype=torch.float64)
        self.last_selection: SelectionResult | None = None  # the latest update's phases and kept chunks

    def state_dict(self) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
        """Everything the learner needs to go on exactly: (tensor groups, JSON data), in the
        checkpoint's layout. Tensors: ``policy``, ``optimizer``, ``pcm`` (q, v, w), ``reference``
        (with a KL term), ``rng`` (``generator/learner``, the mask stream); data: the optimizer's
        scalars, ``pcm.frozen`` and the skip counters (``faults``). Sharded tensors come back full
        (every rank calls this, in the same order)."""
        optimizer_tensors, optimizer_meta = checkpoint.optimizer_state(self.optimizer)
        pcm = self.keep_probs.state_dict()
        tensors = {
            "policy": self.policy.module.state_dict(),
            "optimizer": optimizer_tensors,
            "pcm": {k: v for k, v in pcm.items() if isinstance(v, Tensor)},
            "rng": {"generator/learner": self.generator.get_state()},
        }
        if self.reference is not None:
            tensors["reference"] = self.reference.module.state_dict()
        state = {
            "optimizer": optimizer_meta,
            "pcm": {k: v for k, v in pcm.items() if not isinstance(v, Tensor)},
            "faults": {"skipped_updates": self.skipped_updates, "consecutive_skips": self.consecutive_skips},
        }
        tensors = self.parallel.full_tensors(tensors)
        self.parallel.gather_for_rollouts()  # state_dict() resharded FSDP's weights
        return tensors, state

    def load_state_dict(self, tensors: dict[str, dict[str, Tensor]], state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned (or a checkpoint holds)."""
        self.parallel.before_restore(tensors, self.optimizer)
        self.policy.module.load_state_dict(tensors["policy"])
        if self.reference is not None and "reference" in tensors:
            self.reference.module.load_state_dict(tensors["reference"])
        checkpoint.load_optimizer_state(self.optimizer, tensors["optimizer"], state["optimizer"])
        self.keep_probs.load_state_dict({**tensors["pcm"], **state["pcm"]})
        self.skipped_updates = int(state["faults"]["skipped_updates"])
        self.consecutive_skips = int(state["faults"]["consecutive_skips"])
        self.generator.set_state(tensors["rng"]["generator/learner"])
        self.parallel.gather_for_rollouts()

    @staticmethod
    def _frozen_copy(policy: PolicyBackend) -> PolicyBackend:
        reference = copy.deepcopy(policy)
        for parameter in reference.module.parameters():
            parameter.requires_grad_(False)
        return reference

    def select(self, batch: RolloutBatch) -> SelectionResult:
        """Advantages, phases, phase scores, q update, chunk sampling, loss weights and compaction.

        ``batch`` holds this rank's whole groups (all of them in one process); phase scores and
        the normalisers of the loss weights are those of the global batch.
        """
        advantages = group_advantages(batch.rewards, batch.group_index)  # A_i  [N_r]
        phases = self.segmenter.segment(batch)  # k(i, t)  [N_r, T]
        scores = self.comm.sum_scores(self.proxy.score(batch, phases, self.segmenter.num_phases))  # v_k as sums/counts
        keep_probs = self.keep_probs.update(scores)  # q_k  [P], the same on every rank
        return self._sample(batch, advantages, phases, scores, keep_probs)

    def resample(self, batch: RolloutBatch, previous: SelectionResult) -> SelectionResult:
        """A fresh mask for ``batch`` with the phases, scores and keep-probabilities of ``previous``
        (``train.resample_masks``: each update epoch backpropagates other chunks)."""
        return self._sample(batch, previous.advantages, previous.phases, previous.scores, previous.keep_probs)

    def _sample(
        self, batch: RolloutBatch, advantages: Tensor, phases: Tensor, scores: PhaseScores, keep_probs: Tensor
    ) -> SelectionResult:
        """Budgets, the masks (one stream per trajectory from a new step seed), loss weights, compaction."""
        budgets = trajectory_budgets(batch.lengths, self.pcm.budget, self.pcm.budget_scaling, batch.horizon_chunks)  # B_i
        step_seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))  # the same on every rank
        offset, num_global = self.comm.offset(batch.num_trajectories)  # this rank's first global index, N
        seeds = step_seed + offset + torch.arange(batch.num_trajectories)  # one stream per global trajectory  [N_r]
        selection = select_per_trajectory(self.sampler, phases, batch.lengths, keep_probs, budgets, seeds)
        backprop = self._backpropagated(selection, advantages)  # the kept chunks whose loss term is not 0
        self._global_counts = self.comm.sum(self._batch_counts(batch, selection, backprop))
        weights = chunk_weights(
            selection, batch.lengths, batch.tokens.shape[-1], self.pcm.estimator, self.train.loss_aggregation,
            num_trajectories=num_global, num_kept=int(self._global_counts[0]), world_size=self.comm.world_size,
            phases=phases,
        )  # w_c  [C_r], normalised over every kept chunk
        weights = weights[backprop[selection.keep]]  # [C'_r]
        if not backprop.any() and selection.keep.any():  # a placeholder, weight 0: this rank still runs its share
            first = selection.keep.nonzero()[0]
            backprop[first[0], first[1]] = True
            weights = torch.zeros(1, dtype=torch.float64)
        compact_batch = compact(batch, Selection(backprop, selection.inclusion_prob), advantages, weights)
        return SelectionResult(advantages, phases, scores, keep_probs.clone(), selection, compact_batch)

    def _backpropagated(self, selection: Selection, advantages: Tensor) -> Tensor:
        """``[N_r, T]`` bool: the kept chunks that take a forward/backward. With
        ``train.skip_zero_advantage`` and no KL term, a trajectory whose advantage is exactly 0 (its
        group's outcomes are all equal) adds exactly 0 to the loss and its gradient, so its kept
        chunks are dropped; the loss normalisers still count them, so the update is unchanged. With
        a KL term they are dropped too when ``train.kl_on_uniform_groups`` is false (then only the
        trajectories that carry an advantage are anchored)."""
        kl_everywhere = self.train.kl_coef > 0 and self.train.kl_on_uniform_groups
        if self.train.skip_zero_advantage and not kl_everywhere:
            return selection.keep & (advantages != 0)[:, None]
        return selection.keep.clone()

    @staticmethod
    def _batch_counts(batch: RolloutBatch, selection: Selection, backprop: Tensor) -> Tensor:
        """``[7]`` float64: kept chunks, trajectories, successes, mixed groups, groups, real chunks,
        backpropagated chunks."""
        uniform = uniform_groups(batch.rewards, batch.group_index)  # [M_r]
        return torch.tensor(
            [float(selection.keep.sum()), batch.num_trajectories, float(batch.rewards.sum()), float((~uniform).sum()),
             uniform.numel(), float(batch.lengths.sum()), float(backprop.sum())],
            dtype=torch.float64,
        )

    def backward(self, batch: CompactBatch) -> dict[str, float]:
        """Micro-batched forward/backward over the kept chunks; gradients accumulate. Every rank
        runs the same number of micro-batches (FSDP gathers weights in each forward, DDP reduces
        gradients in the last backward)."""
        device = self.policy.device
        chunks = len(batch) if bool(batch.weights.ne(0).any()) else 0  # a zero-weight placeholder alone needs none
        wanted = math.ceil(chunks / self.train.micro_batch_size)  # this rank's micro-batches
        num_parts = int(self.comm.max(torch.tensor([float(wanted)])).item())  # the most any rank needs
        parts = balanced_parts(batch, num_parts)
        totals = {"loss": 0.0, "clip_fraction": 0.0}
        for i, part in enumerate(parts):
            obs = {key: value.to(device, non_blocking=True) for key, value in part.obs.items()}
            tokens = part.tokens.to(device)
            ref_logprobs = None
            if self.reference is not None:
                with torch.no_grad(), policy_precision(device, self.train):
                    ref_logprobs = self.reference.log_probs(obs, part.instructions, tokens).float()
            with self.parallel.gradient_sync(i == len(parts) - 1), self.meter.measure(), policy_precision(device, self.train):
                logprobs = self.policy.log_probs(obs, part.instructions, tokens).float()  # log pi_theta  [c, L]
                loss, stats = policy_loss(
                    logprobs,
                    part.old_logprobs.to(device),
                    part.advantages.to(device),
                    part.weights.to(device),
                    clip_low=self.train.clip_low,
                    clip_high=self.train.clip_high,
                    ref_logprobs=ref_logprobs,
                    kl_coef=self.train.kl_coef,
                )
                loss.backward()
            totals["loss"] += float(loss.detach())
            totals["clip_fraction"] += float(stats["clip_fraction"]) * len(part) / max(len(batch), 1)
        return totals

    def update(self, batch: RolloutBatch, timer: StepTimer) -> dict[str, float]:
        """One training step on a collected batch; returns its metrics."""
        device = self.policy.device
        reset_cuda_peak(device)
        self.meter.total_bytes = self.meter.peak_bytes = 0
        with timer.section("select", device):
            result = self.last_selection = self.select(batch)
        self.policy.module.train()
        losses: dict[str, float] = {}
        for epoch in range(self.train.update_epochs):
            if epoch > 0 and self.train.resample_masks:
                with timer.section("select", device):
                    result = self.resample(batch, result)
            self.optimizer.zero_grad(set_to_none=True)  # stale gradients (e.g. left by SFT) never leak in
            with timer.section("forward_backward", device):
                losses = self.backward(result.batch)
                self._zero_missing_gradients()  # no chunk ran: a zero gradient, so Adam steps as it would on one
            with timer.section("optimizer", device):
                self._set_learning_rate()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.module.parameters(), self.train.max_grad_norm)
                if self._update_is_finite(losses["loss"], grad_norm) and self._step_keeps_weights_finite():
                    self.consecutive_skips = 0
                else:  # NaN/inf guard: these gradients (or this update) never reach the weights or Adam's moments
                    self.skipped_updates += 1
                    self.consecutive_skips += 1
                self.optimizer.zero_grad(set_to_none=True)
        self.policy.module.eval()
        self.parallel.after_update()  # FSDP: the full weights again, to act
        return self._metrics(batch, result, losses, self.parallel.full_value(grad_norm), device)

    def _step_keeps_weights_finite(self) -> bool:
        """Take the optimizer step; with ``train.guard_weights``, undo it (weights and optimizer state)
        when it left a non-finite trainable weight on any rank, and say whether it stood."""
        if not self.train.guard_weights:
            self.optimizer.step()
            return True
        trainable = [p for p in self.policy.module.parameters() if p.requires_grad]
        weights = [p.detach().clone() for p in trainable]
        state = {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in self.optimizer.state[p].items()}
                 for p in trainable if p in self.optimizer.state}
        self.optimizer.step()
        finite = bool(torch.stack([torch.isfinite(p).all() for p in trainable]).all())  # one device sync
        if not self.comm.any(not finite):
            return True
        with torch.no_grad():
            for parameter, saved in zip(trainable, weights):
                parameter.copy_(saved)
        for parameter in trainable:  # Adam's moments and step count as they were (none before a first step)
            if parameter in state:
                self.optimizer.state[parameter] = state[parameter]
            else:
                self.optimizer.state.pop(parameter, None)
        return False

    def _zero_missing_gradients(self) -> None:
        for parameter in self.policy.module.parameters():
            if parameter.requires_grad and parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)

    def _update_is_finite(self, loss: float, grad_norm: torch.Tensor) -> bool:
        """Whether this update may reach the weights: a finite loss and gradient norm on every rank
        (one rank's NaN skips the step everywhere, so replicas stay equal and count the same skips)."""
        finite = math.isfinite(loss) and bool(torch.isfinite(self.parallel.full_tensor(grad_norm)))
        return not self.comm.any(not finite)

    def _set_learning_rate(self) -> None:
        """``lr * min(1, (u + 1) / warmup_steps)`` for the ``u``-th applied update (counted by the
        optimizer's own state, so a resumed run continues the ramp where it stopped)."""
        applied = max((int(state["step"]) for state in self.optimizer.state.values() if "step" in state), default=0)
        warmup = self.train.warmup_steps
        scale = min(1.0, (applied + 1) / warmup) if warmup > 0 else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = self.train.lr * scale

    def _metrics(
        self, batch: RolloutBatch, result: SelectionResult, losses: dict[str, float], grad_norm: float, device: torch.device
    ) -> dict[str, float]:
        """The step's metrics, of the global batch where they describe it (success, kept chunks,
        loss); activation bytes are this rank's."""
        kept, trajectories, successes, mixed, groups, chunks, backprop = self._global_counts.tolist()
        loss, clipped = self.comm.sum(
            torch.tensor([losses.get("loss", 0.0), losses.get("clip_fraction", 0.0) * len(result.batch)], dtype=torch.float64)
        ).tolist()
        metrics = {
            "success_rate": successes / max(trajectories, 1),
            "mixed_group_fraction": mixed / max(groups, 1),
            "entropy": float(batch.entropy[batch.chunk_mask].mean()),  # mean action-token entropy of this rank's rollouts
            "kept_chunk_fraction": kept / max(chunks, 1),
            "kept_chunks": kept,
            "backprop_chunk_fraction": backprop / max(chunks, 1),  # kept and with a non-zero loss term
            "loss": loss / self.comm.world_size,  # the weights carry a factor W
            "clip_fraction": clipped / max(backprop, 1),
            "grad_norm": grad_norm,
            "learning_rate": float(self.optimizer.param_groups[0]["lr"]),
            "faults/skipped_updates": float(self.skipped_updates),
            "saved_activation_bytes": float(self.meter.total_bytes),
            "peak_saved_activation_bytes": float(self.meter.peak_bytes),
        }
        if self.comm.active:
            metrics["ranks"] = float(self.comm.world_size)
        for k, value in enumerate(result.keep_probs.tolist()):
            metrics[f"keep_prob/phase_{k}"] = value
        for k, value in enumerate(result.scores.value.tolist()):
            metrics[f"score/phase_{k}"] = value
        peak = cuda_peak_memory(device)
        if peak is not None:
            metrics["cuda_peak_memory_bytes"] = float(peak)
        return metrics
