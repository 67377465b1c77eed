"""``pcm-run`` with a learning signal, for torchrun in the tests: the outcome of a trajectory is the
parity of its first chunk's action tokens (the tiny untrained policy never succeeds at the task)."""

import sys

from pcm_core.cli import main
from pcm_core.collectors import Collector

original = Collector.step_batch


def step_batch(self):
    batch = original(self)
    batch.rewards = (batch.tokens[:, 0].sum(dim=-1) % 2 == 0).to(batch.rewards.dtype)
    return batch


Collector.step_batch = step_batch

if __name__ == "__main__":
    main(sys.argv[1:])
