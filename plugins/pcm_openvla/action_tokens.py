"""OpenVLA's action tokenisation and un-normalisation (``prismatic/vla/action_tokenizer.py``).

Tokenise: clip to [-1, 1], ``b = np.digitize(a, linspace(-1, 1, n_bins))`` (so ``b`` in 1..n_bins),
token id ``= vocab_end - b`` where ``vocab_end`` is the LM vocabulary without its padding
(32000 for Llama-2: action ids 31744..31999, ``-1 -> 31999``, ``+1 -> 31744``).

Detokenise: ``b = vocab_end - id``, bin centre index ``clip(b - 1, 0, n_bins - 2)``, value
``centres[i]`` with ``centres = (edges[:-1] + edges[1:]) / 2`` (255 centres for 256 bins: the two
ids of ``b = 255`` and ``b = 256`` decode to the same last centre).

Un-normalise (bounds_q99): ``0.5 (a + 1) (q99 - q01 + eps) + q01`` where ``mask`` is true, ``a``
elsewhere (``eps`` is 0 in OpenVLA, 1e-8 in OpenVLA-OFT).
"""

from __future__ import annotations

import torch
from torch import Tensor


class ActionTokenizer:
    """Maps normalised actions to vocabulary ids and back, on torch tensors."""

    def __init__(self, vocab_end: int, n_bins: int = 256) -> None:
        self.vocab_end = vocab_end
        self.n_bins = n_bins
        self.edges = torch.linspace(-1.0, 1.0, n_bins, dtype=torch.float64)  # [n_bins]
        self.centres = (self.edges[:-1] + self.edges[1:]) / 2.0  # [n_bins - 1]

    @property
    def first_id(self) -> int:
        """Smallest action token id (``vocab_end - n_bins``)."""
        return self.vocab_end - self.n_bins

    def to_ids(self, actions: Tensor) -> Tensor:
        """Normalised actions (any shape) -> long token ids, same shape."""
        clipped = actions.detach().double().clamp(-1.0, 1.0).cpu()
        bins = torch.bucketize(clipped, self.edges, right=True)  # == np.digitize: edges[b-1] <= a < edges[b]
        return (self.vocab_end - bins).to(actions.device)

    def to_actions(self, ids: Tensor) -> Tensor:
        """Long token ids (any shape) -> float32 bin centres, same shape."""
        index = (self.vocab_end - ids.long().cpu() - 1).clamp(0, self.n_bins - 2)
        return self.centres[index].float().to(ids.device)

    def slot(self, ids: Tensor) -> Tensor:
        """Position ``0..n_bins-1`` of each id among the action ids (``id - first_id``)."""
        return ids.long() - self.first_id


def unnormalize(actions: Tensor, stats: dict, eps: float = 0.0) -> Tensor:
    """Normalised actions ``[..., D]`` -> dataset units with ``stats`` ``{'q01', 'q99', 'mask'?}``."""
    low = torch.tensor(stats["q01"], dtype=actions.dtype, device=actions.device)
    high = torch.tensor(stats["q99"], dtype=actions.dtype, device=actions.device)
    mask = torch.tensor(stats.get("mask", [True] * len(stats["q01"])), dtype=torch.bool, device=actions.device)
    return torch.where(mask, 0.5 * (actions + 1.0) * (high - low + eps) + low, actions)


def normalize(values: Tensor, stats: dict, eps: float = 1e-8) -> Tensor:
    """Dataset units ``[..., D]`` -> [-1, 1], clipped, ``mask`` as above: OFT's proprio
    normalisation, and the inverse of :func:`unnormalize` for actions."""
    low = torch.tensor(stats["q01"], dtype=values.dtype, device=values.device)
    high = torch.tensor(stats["q99"], dtype=values.dtype, device=values.device)
    mask = torch.tensor(stats.get("mask", [True] * len(stats["q01"])), dtype=torch.bool, device=values.device)
    scaled = (2.0 * (values - low) / (high - low + eps) - 1.0).clamp(-1.0, 1.0)
    return torch.where(mask, scaled, values)
