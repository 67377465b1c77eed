"""A rough memory estimate of a run, checked before anything is built.

A step stores every trajectory's observations at every chunk start (``[N, T, ...]``), so
``tasks_per_step x group_size x chunks`` observations must fit in memory at once, beside the
policy's weights, gradients and Adam moments (16 bytes a parameter in float32). Envs and policies
that can say their sizes (``EnvBackend.observation_bytes``, ``PolicyBackend.parameter_count``) are
counted; a run estimated above the machine's memory is refused with the numbers, not left to a
``MemoryError`` minutes later.
"""

from __future__ import annotations

import math
import os
from typing import Any

from pcm_core.config import RunConfig
from pcm_core.errors import ConfigError


def machine_memory_bytes() -> int | None:
    """Physical memory of this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def rollout_batch_bytes(config: RunConfig, components: dict[str, Any]) -> int | None:
    """Bytes of one step's stored observations, or None when the env cannot tell its observation size."""
    env = components["env"]
    per_observation = env.cls.observation_bytes(env.options)
    max_steps = getattr(env.options, "max_steps", None)
    if per_observation is None or max_steps is None:
        return None
    chunk_size = getattr(components["policy"].options, "chunk_size", None) or 1
    trajectories = config.train.tasks_per_step * config.train.group_size
    return trajectories * math.ceil(max_steps / chunk_size) * per_observation


def training_state_bytes(components: dict[str, Any]) -> int | None:
    """Weights, gradients and Adam's two moments of the policy, float32 (None when unknown)."""
    policy = components["policy"]
    count = policy.cls.parameter_count(policy.options)
    return None if count is None else 16 * count


def check_memory(config: RunConfig, components: dict[str, Any]) -> None:
    """Refuse a run whose rollout batch and training state are estimated above the machine's memory."""
    rollout, state, available = rollout_batch_bytes(config, components), training_state_bytes(components), machine_memory_bytes()
    needed = (rollout or 0) + (state or 0)
    if available is None or needed <= available:
        return
    train = config.train
    raise ConfigError(
        f"this run needs about {needed / 2**30:,.1f} GiB (a step's observations for train.tasks_per_step="
        f"{train.tasks_per_step} x train.group_size={train.group_size}: {(rollout or 0) / 2**30:,.1f} GiB; the policy's "
        f"weights, gradients and Adam: {(state or 0) / 2**30:,.1f} GiB); this machine has {available / 2**30:,.1f} GiB.\n"
        "Fix: lower train.tasks_per_step or train.group_size (or the env's max_steps / image size, or the model size)"
    )
