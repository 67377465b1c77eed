"""Driven by test_signals.py: a tiny ``pcm-run`` that sends itself SIGINT at step 2, during the
rollout or during the backward pass (``twice``: two SIGINTs during the rollout)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import conftest  # noqa: E402  (TINY settings)
import torch  # noqa: E402

torch.set_num_threads(1)

from pcm_core.collectors import Collector  # noqa: E402
from pcm_core.cli import main  # noqa: E402
from pcm_core.learner import Learner  # noqa: E402

mode, output, cache = sys.argv[1], sys.argv[2], sys.argv[3]
calls = {"rollout": 0, "backward": 0}


def interrupt(where: str) -> None:
    calls[where] += 1
    if calls[where] == 2 and mode.startswith(where):
        os.kill(os.getpid(), signal.SIGINT)
        if mode == "rollout_twice":
            time.sleep(0.5)  # the first is handled (a pending signal is not queued twice)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)


original_step_batch, original_backward = Collector.step_batch, Learner.backward


def step_batch(self):
    interrupt("rollout")
    return original_step_batch(self)


def backward(self, batch):
    interrupt("backward")
    return original_backward(self, batch)


Collector.step_batch, Learner.backward = step_batch, backward
sets = [*conftest.TINY, "train.steps=4", "train.checkpoint_every=0", f"train.output_dir={output}",
        f"train.sft.cache_dir={cache}", "tracking.enabled=false"]
sys.exit(main([arg for value in sets for arg in ("--set", value)]))
