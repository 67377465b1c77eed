"""Draw action tokens from per-token categorical distributions, as policy backends need."""

from __future__ import annotations

import torch
from torch import Tensor


def sample_tokens(log_p: Tensor, generator: torch.Generator | None = None, greedy: bool = False) -> Tensor:
    """Tokens ``[B, L]`` from log-probabilities ``[B, L, V]`` (their argmax with ``greedy``).

    Inverse-CDF sampling: one uniform ``u`` per token, and the token is the number of cumulative
    probabilities below ``u``, so ``P(token = j) = p_j``. It costs one uniform per token where
    ``torch.multinomial`` draws V exponentials, a tenth of a small policy's act time on CPU. The
    uniforms come from ``generator``, on its device (a CPU generator also drives a CUDA policy).
    """
    if greedy:
        return log_p.argmax(dim=-1)
    device = generator.device if generator is not None else log_p.device
    cdf = log_p.float().exp().cumsum(-1).to(device)  # [B, L, V]
    u = torch.rand(cdf.shape[:-1] + (1,), generator=generator, device=device)  # [B, L, 1]
    u = u.clamp_min(torch.finfo(u.dtype).tiny) * cdf[..., -1:]  # u > 0: a zero-probability first token is never drawn
    tokens = (cdf < u).sum(-1).clamp(max=cdf.shape[-1] - 1)  # [B, L]
    return tokens.to(log_p.device)
