"""Ray rollout actors on a local cluster: a step of the embedded default, and a lost actor."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from pcm_core.config import load_config, resolve_components

pytestmark = pytest.mark.distributed
ray = pytest.importorskip("ray")


def _cpu_ticks(pid: int) -> int:
    """User + system CPU ticks the process has used so far (``/proc/<pid>/stat``)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@pytest.fixture
def rollouts():
    from pcm_core.ray_rollouts import RayRollouts

    config = load_config(overrides=["train.tasks_per_step=2", "train.group_size=4", "distributed.rollout_workers=2", "train.threads=1"])
    components = resolve_components(config)
    policy = components["policy"].build()
    env = components["env"].build(num_envs=8, seed=0)
    messages: list[str] = []
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    workers = RayRollouts(env, policy, config, rng, generator, components, log=messages.append)
    yield config, env, policy, workers, messages
    workers.close()
    env.close()


def test_two_actors_collect_a_step_and_outlive_a_killed_one(rollouts):
    config, env, policy, workers, messages = rollouts

    batch = workers.step_batch()
    assert batch.num_trajectories == 8 and batch.group_index.unique().numel() == 2
    assert batch.lengths.min() >= 1 and batch.tokens.shape[-1] == policy.tokens_per_chunk
    assert workers.publish() == {"rollout/workers_lost": 0.0, "rollout/trajectories": 8.0}

    first_pids = workers.pids()
    victim = first_pids[0]
    start = _cpu_ticks(victim)
    killed = threading.Event()

    def kill_when_busy() -> None:  # mid-step: once actor 0 has spent 0.2 s of CPU on its episodes
        while _cpu_ticks(victim) - start < 20:
            time.sleep(0.01)
        os.kill(victim, signal.SIGKILL)
        killed.set()

    killer = threading.Thread(target=kill_when_busy, daemon=True)
    killer.start()
    batch = workers.step_batch()
    assert killed.is_set()
    assert batch.num_trajectories == 4 and batch.group_index.unique().numel() == 1  # actor 1's group arrived
    assert workers.publish() == {"rollout/workers_lost": 1.0, "rollout/trajectories": 4.0}
    assert any("rollout actor 0 lost" in line for line in messages)

    batch = workers.step_batch()  # the next step: both actors
    assert batch.num_trajectories == 8
    new_pids = workers.pids()
    assert new_pids[0] != victim and new_pids[1] == first_pids[1]
