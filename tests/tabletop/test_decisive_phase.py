"""PCM's keep-probabilities concentrate on the tabletop's decisive phase (align + grasp).

The behaviour policy is the scripted expert with a little action noise whose gripper, in half of
the episodes, closes too early while it aligns with the block (each step of the align + grasp
phase with probability 0.8): the failure mode of the warm-started tiny VLA, which misjudges the
alignment and knocks the block away (docs/tabletop.md). Groups then have mixed outcomes without a
trained VLA, and the rest is the learner's own pipeline: the ``env`` segmenter, the
``success_failure`` proxy and the online q update. Where failures come from i.i.d. noise on every
action instead, the mean actions of both sides agree in every phase and the proxy has no phase
to prefer: the proxy finds where behaviour differs systematically.
"""

from __future__ import annotations

import numpy as np
import torch

from pcm_core.algo.pcm import KeepProbabilities
from pcm_core.types import RolloutBatch
from pcm_phases.proxies import SuccessFailureProxy
from pcm_phases.segmenters import EnvSegmenter, PhaseOptions
from pcm_tabletop.env import TabletopEnv, TabletopOptions

CHUNK = 4
DECISIVE_PHASE = 1  # align + grasp (pcm_tabletop.env module docstring)


def hasty_expert_batch(groups: int, group_size: int, seed: int) -> RolloutBatch:
    """Episodes in chunks of 4 actions; group g starts from layout ``seed * 100 + g``; half of each
    group's members close the gripper too early (module docstring)."""
    num_envs = groups * group_size
    env = TabletopEnv(TabletopOptions(image_size=16, expert_noise=0.1), num_envs=num_envs, seed=seed)
    rng = np.random.default_rng(seed)
    hasty = np.arange(num_envs) % 2 == 1  # [B]
    group_ids = np.arange(num_envs) // group_size
    env.reset(group_ids % env.num_tasks, seed * 100 + group_ids)
    phase = np.zeros(num_envs, dtype=np.int64)
    actions, phases = [], []
    for _ in range(env.max_steps // CHUNK):
        chunk = []
        for k in range(CHUNK):
            action = env.expert_actions()
            early = hasty & (phase == DECISIVE_PHASE) & (rng.random(num_envs) < 0.8)  # [B]
            action[early, 6] = 1.0
            result = env.step(action)
            phase = result.info["phase"]
            if k == 0:
                phases.append(result.info["phase"])  # the chunk's label, as rollout.collect records it
            chunk.append(action)
        actions.append(np.stack(chunk, axis=1))  # [B, K, 7]
    num_chunks = len(actions)
    return RolloutBatch(
        obs={},
        instructions=[""] * num_envs,
        actions=torch.as_tensor(np.stack(actions, axis=1)),  # [N, T, K, 7]
        tokens=torch.zeros(num_envs, num_chunks, 1, dtype=torch.long),
        old_logprobs=torch.zeros(num_envs, num_chunks, 1),
        entropy=torch.zeros(num_envs, num_chunks),
        lengths=torch.full((num_envs,), num_chunks),
        rewards=torch.as_tensor(result.success, dtype=torch.float32),
        group_index=torch.as_tensor(group_ids),
        info={"phase": torch.as_tensor(np.stack(phases, axis=1))},  # [N, T]
    )


def test_keep_probabilities_concentrate_on_the_grasp_phase():
    segmenter = EnvSegmenter(PhaseOptions(num_phases=4))
    proxy = SuccessFailureProxy(SuccessFailureProxy.Options())
    keep = KeepProbabilities(num_phases=4)
    for seed in range(3):
        batch = hasty_expert_batch(groups=4, group_size=8, seed=seed)
        assert 0.0 < float(batch.rewards.mean()) < 1.0  # mixed outcomes: the proxy has signal
        q = keep.update(proxy.score(batch, segmenter.segment(batch), segmenter.num_phases))
    assert int(q.argmax()) == DECISIVE_PHASE, q
    assert float(q[DECISIVE_PHASE]) > 0.25 + 0.1  # clearly above uniform after three updates
