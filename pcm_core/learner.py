"""One PCM-GRPO update: score phases -> update keep-probabilities -> sample -> compact -> backprop.

GRPO is the same learner with the ``all`` sampler: one code path, only the selection differs.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pcm_core.algo.grpo import group_advantages, policy_loss, uniform_groups
from pcm_core.algo.pcm import KeepProbabilities, compact, trajectory_budgets
from pcm_core.config import PCMConfig, TrainConfig
from pcm_core.interfaces import BudgetSampler, PhaseSegmenter, PolicyBackend, VarianceProxy
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
    """Holds the optimizer, PCM's keep-probabilities and the sampling generator."""

    def __init__(
        self,
        policy: PolicyBackend,
        segmenter: PhaseSegmenter,
        proxy: VarianceProxy,
        sampler: BudgetSampler,
        pcm: PCMConfig,
        train: TrainConfig,
    ) -> None:
        self.policy = policy
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
        self.optimizer = torch.optim.AdamW(
            [p for p in policy.module.parameters() if p.requires_grad], lr=train.lr, betas=train.adam_betas,
            weight_decay=train.weight_decay,
        )
        self.generator = torch.Generator().manual_seed(train.seed + 1)
        self.reference = self._frozen_copy(policy) if train.kl_coef > 0 else None
        self.meter = SavedActivationMeter(policy.module)
        self.skipped_updates = 0  # optimizer steps skipped for a non-finite loss or gradient, in all
        self.consecutive_skips = 0  # ... since the last applied step

    @staticmethod
    def _frozen_copy(policy: PolicyBackend) -> PolicyBackend:
        reference = copy.deepcopy(policy)
        for parameter in reference.module.parameters():
            parameter.requires_grad_(False)
        return reference

    def select(self, batch: RolloutBatch) -> SelectionResult:
        """Advantages, phases, phase scores, q update, chunk sampling and compaction."""
        advantages = group_advantages(batch.rewards, batch.group_index)  # A_i  [N]
        phases = self.segmenter.segment(batch)  # k(i, t)  [N, T]
        scores = self.proxy.score(batch, phases, self.segmenter.num_phases)  # v_k as sums/counts
        keep_probs = self.keep_probs.update(scores)  # q_k  [P]
        budgets = trajectory_budgets(batch.lengths, self.pcm.budget, self.pcm.budget_scaling, batch.horizon_chunks)  # B_i  [N]
        selection = self.sampler.select(phases, batch.lengths, keep_probs, budgets, self.generator)
        compact_batch = compact(batch, selection, advantages, self.pcm.estimator, self.train.loss_aggregation)
        return SelectionResult(advantages, phases, scores, keep_probs.clone(), selection, compact_batch)

    def backward(self, batch: CompactBatch) -> dict[str, float]:
        """Micro-batched forward/backward over the kept chunks; gradients accumulate."""
        device = self.policy.device
        totals = {"loss": 0.0, "clip_fraction": 0.0}
        micro = self.train.micro_batch_size
        for start in range(0, len(batch), micro):
            part = batch.slice(start, start + micro)
            obs = {key: value.to(device, non_blocking=True) for key, value in part.obs.items()}
            tokens = part.tokens.to(device)
            ref_logprobs = None
            if self.reference is not None:
                with torch.no_grad(), policy_precision(device, self.train):
                    ref_logprobs = self.reference.log_probs(obs, part.instructions, tokens).float()
            with self.meter.measure(), policy_precision(device, self.train):
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
            result = self.select(batch)
        self.policy.module.train()
        losses: dict[str, float] = {}
        for _ in range(self.train.update_epochs):
            self.optimizer.zero_grad(set_to_none=True)  # stale gradients (e.g. left by SFT) never leak in
            with timer.section("forward_backward", device):
                losses = self.backward(result.batch)
            with timer.section("optimizer", device):
                self._set_learning_rate()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.module.parameters(), self.train.max_grad_norm)
                if self._update_is_finite(losses["loss"], grad_norm):
                    self.optimizer.step()
                    self.consecutive_skips = 0
                else:  # NaN/inf guard: these gradients never reach the weights or Adam's moments
                    self.skipped_updates += 1
                    self.consecutive_skips += 1
                self.optimizer.zero_grad(set_to_none=True)
        self.policy.module.eval()
        return self._metrics(batch, result, losses, float(grad_norm), device)

    def _update_is_finite(self, loss: float, grad_norm: torch.Tensor) -> bool:
        """Whether this update may reach the weights: a finite loss and gradient norm."""
        return math.isfinite(loss) and bool(torch.isfinite(grad_norm))

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
        real_chunks = int(batch.lengths.sum())
        kept_chunks = int(result.selection.keep.sum())
        uniform = uniform_groups(batch.rewards, batch.group_index)
        metrics = {
            "success_rate": float(batch.rewards.mean()),
            "mixed_group_fraction": 1.0 - float(uniform.float().mean()),
            "entropy": float(batch.entropy[batch.chunk_mask].mean()),  # mean action-token entropy of the rollouts
            "kept_chunk_fraction": kept_chunks / max(real_chunks, 1),
            "kept_chunks": float(kept_chunks),
            "loss": losses.get("loss", 0.0),
            "clip_fraction": losses.get("clip_fraction", 0.0),
            "grad_norm": grad_norm,
            "learning_rate": float(self.optimizer.param_groups[0]["lr"]),
            "faults/skipped_updates": float(self.skipped_updates),
            "saved_activation_bytes": float(self.meter.total_bytes),
            "peak_saved_activation_bytes": float(self.meter.peak_bytes),
        }
        for k, value in enumerate(result.keep_probs.tolist()):
            metrics[f"keep_prob/phase_{k}"] = value
        for k, value in enumerate(result.scores.value.tolist()):
            metrics[f"score/phase_{k}"] = value
        peak = cuda_peak_memory(device)
        if peak is not None:
            metrics["cuda_peak_memory_bytes"] = float(peak)
        return metrics
