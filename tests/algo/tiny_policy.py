"""A small rollout batch, a tiny per-chunk policy and a naive GRPO reference loss for the PCM/GRPO tests (float64)."""

import torch
from torch import Tensor, nn

from pcm_core.algo.grpo import chunk_weights, policy_loss, ppo_clip_token_loss
from pcm_core.algo.pcm import compact
from pcm_core.types import CompactBatch, RolloutBatch, Selection

FEATURES, TOKENS, VOCAB = 2, 2, 2  # per-chunk feature size, L, V


class TinyPolicy(nn.Module):
    """A linear layer from a per-chunk feature ``[B, F]`` to ``L x V`` logits: chunks never interact."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(FEATURES, TOKENS * VOCAB).double()

    def log_probs(self, feature: Tensor, tokens: Tensor) -> Tensor:
        """``[B, L]`` log-probabilities of ``tokens`` ``[B, L]``."""
        logits = self.linear(feature).view(-1, TOKENS, VOCAB)
        return logits.log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)

    def loss_and_grad(self, batch: CompactBatch) -> tuple[Tensor, Tensor]:
        """The compact batch's loss and the flat parameter gradient."""
        self.zero_grad()
        logprobs = self.log_probs(batch.obs["feature"], batch.tokens)
        loss, _ = policy_loss(logprobs, batch.old_logprobs, batch.advantages, batch.weights, 0.2, 0.28)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in self.parameters()])


class TinyBackend:
    """The parts of a PolicyBackend the learner uses, around :class:`TinyPolicy` (features in ``obs``)."""

    device = torch.device("cpu")

    def __init__(self, seed: int = 0) -> None:
        self.module = TinyPolicy(seed)

    def log_probs(self, obs: dict[str, torch.Tensor], instructions: list[str], tokens: torch.Tensor) -> torch.Tensor:
        return self.module.log_probs(obs["feature"], tokens)


def make_batch(lengths: list[int], rewards: list[float], groups: list[int], seed: int = 0) -> RolloutBatch:
    """Random trajectories padded to ``max(lengths)`` chunks (padding filled with large garbage)."""
    gen = torch.Generator().manual_seed(seed)
    n, t = len(lengths), max(lengths)
    lengths_t = torch.tensor(lengths)
    real = torch.arange(t)[None, :] < lengths_t[:, None]
    feature = torch.randn(n, t, FEATURES, generator=gen, dtype=torch.float64)
    tokens = torch.randint(0, VOCAB, (n, t, TOKENS), generator=gen)
    with torch.no_grad():
        old = TinyPolicy().log_probs(feature.view(-1, FEATURES), tokens.view(-1, TOKENS)).view(n, t, TOKENS)
    old = old + 0.3 * torch.randn(old.shape, generator=gen, dtype=torch.float64)  # ratios away from 1
    actions = torch.rand(n, t, 2, 7, generator=gen) * 2 - 1
    garbage = ~real
    feature[garbage], actions[garbage] = 1e6, 1e6
    return RolloutBatch(
        obs={"feature": feature},
        instructions=[f"task {g}" for g in groups],
        actions=actions,
        tokens=tokens,
        old_logprobs=old,
        entropy=torch.rand(n, t, generator=gen),
        lengths=lengths_t,
        rewards=torch.tensor(rewards, dtype=torch.float64),
        group_index=torch.tensor(groups),
    )


def naive_grpo_loss(policy, batch, advantages, aggregation):
    """Plain GRPO on the padded batch: token losses [N, T, L] averaged as ``aggregation`` says."""
    n, t, length = batch.tokens.shape
    real = batch.chunk_mask
    logprobs = policy.log_probs(batch.obs["feature"][real], batch.tokens[real])
    token_loss = ppo_clip_token_loss(logprobs, batch.old_logprobs[real], advantages[:, None].expand(n, t)[real], 0.2, 0.28)
    if aggregation == "token_mean":
        return token_loss.sum() / token_loss.numel()
    per_trajectory = torch.zeros(n, dtype=token_loss.dtype).index_add(0, real.nonzero()[:, 0], token_loss.sum(1))
    return (per_trajectory / (batch.lengths * length)).mean()  # seq_mean = traj_sum when nothing is dropped


def weighted_compact(
    batch: RolloutBatch, selection: Selection, advantages: Tensor, estimator: str = "masked", aggregation: str = "token_mean",
    phases: Tensor | None = None,
) -> CompactBatch:
    """The kept chunks of one process's batch with their loss weights (what the learner builds)."""
    weights = chunk_weights(selection, batch.lengths, batch.tokens.shape[-1], estimator, aggregation, phases=phases)
    return compact(batch, selection, advantages, weights)
