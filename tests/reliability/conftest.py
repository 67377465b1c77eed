"""Shared tiny settings: a 1-layer VLA on 16-pixel images, 2 groups of 2, 8 chunks per episode,
no warm start."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pcm_core.collectors import Collector

TINY = [
    "train.tasks_per_step=2",
    "train.group_size=2",
    "train.eval_episodes=4",
    "train.eval_every=0",
    "train.sft.enabled=false",
    "env.options.max_steps=32",
    "env.options.image_size=16",
    "policy.options.hidden_size=32",
    "policy.options.num_layers=1",
    "policy.options.num_heads=2",
    "policy.options.intermediate_size=64",
    "policy.options.image_size=16",
    "policy.options.patch_size=8",
    "pcm.budget=4",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One warm-start cache for the whole session (the first run fills it)."""
    return tmp_path_factory.mktemp("warm_start_cache")


@pytest.fixture
def tiny_args(cache_dir):
    """``tiny_args(output, *sets, tracking=None)``: ``pcm-run`` arguments for a tiny run writing to
    ``output``; tracking off unless a URI is given."""

    def make(output: Path, *extra: str, tracking: str | None = None) -> list[str]:
        sets = [*TINY, f"train.sft.cache_dir={cache_dir}", f"train.output_dir={output}", *extra]
        sets.append(f"tracking.uri={tracking}" if tracking else "tracking.enabled=false")
        return [arg for value in sets for arg in ("--set", value)]

    return make


def parity_rewards(batch):
    """Outcome 1 when the first chunk's action tokens sum to an even number: a deterministic
    function of what the policy sampled, so groups are mixed and every update moves the weights
    (the tiny untrained policy never succeeds at the real task)."""
    batch.rewards = (batch.tokens[:, 0].sum(dim=-1) % 2 == 0).to(batch.rewards.dtype)
    return batch


@pytest.fixture
def learning_signal(monkeypatch):
    """Replace the env's outcome by :func:`parity_rewards` for runs in this process."""
    original = Collector.step_batch

    def step_batch(self):
        return parity_rewards(original(self))

    monkeypatch.setattr(Collector, "step_batch", step_batch)


@pytest.fixture(autouse=True)
def _deterministic_single_thread():
    """Deterministic kernels; one intra-op thread (tiny models on a busy 2-core box run ~100x
    faster than with spinning OpenMP threads)."""
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    yield
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)
