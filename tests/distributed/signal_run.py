"""``pcm-run`` with a learning signal, for torchrun in the tests: the outcome of a trajectory is the
parity of its first chunk's action tokens (the tiny untrained policy never succeeds at the task)."""

import sys

import pcm_core.runner
from pcm_core.cli import main

original = pcm_core.runner.collect_step


def collect_step(*args, **kwargs):
    batch = original(*args, **kwargs)
    batch.rewards = (batch.tokens[:, 0].sum(dim=-1) % 2 == 0).to(batch.rewards.dtype)
    return batch


pcm_core.runner.collect_step = collect_step

if __name__ == "__main__":
    main(sys.argv[1:])
