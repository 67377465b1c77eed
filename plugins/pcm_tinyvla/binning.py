"""Action discretisation: 256 uniform bins over [-1, 1], one token per action dimension.

Bin ``b`` covers ``[-1 + b w, -1 + (b + 1) w)`` with width ``w = 2 / 256`` (the last bin also holds
``+1``); a token decodes to its bin centre ``-1 + (b + 0.5) w``. So ``-1 -> 0``, ``+1 -> 255`` and
``0.0 -> 128``: zero is the left edge of bin 128 (bin 127 is ``[-1/128, 0)``), so no bin is centred
on zero and a decoded zero is ``+1/256``. This is OpenVLA's "256 uniform bins over [-1, 1]"
convention with equal-width bins; OpenVLA itself digitises against 256 *edges* (255 usable bins).
"""

from __future__ import annotations

from torch import Tensor

NUM_BINS = 256
BIN_WIDTH = 2.0 / NUM_BINS


def actions_to_bins(actions: Tensor) -> Tensor:
    """Bin ids ``0..255`` (long, same shape) of normalised actions; values are clipped to [-1, 1]."""
    scaled = (actions.float().clamp(-1.0, 1.0) + 1.0) / BIN_WIDTH  # in [0, 256]
    return scaled.floor().long().clamp(0, NUM_BINS - 1)


def bins_to_actions(bins: Tensor) -> Tensor:
    """Bin centres (float32, same shape) of bin ids ``0..255``."""
    return -1.0 + (bins.float() + 0.5) * BIN_WIDTH

