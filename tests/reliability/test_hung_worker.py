"""An env worker that hangs instead of dying: after ``timeout_s`` without an answer it is killed
and restarted like a crashed one, and only its trajectories of that rollout are lost."""

from __future__ import annotations

import logging

from crashing_env import CrashingEnv, CrashingOptions

from pcm_core.config import ResolvedComponent
from pcm_core.rollout import GroupSpec, collect
from pcm_core.vector_env import SubprocessEnv
from test_env_workers import ScriptedPolicy


def test_hung_worker_is_killed_after_the_timeout_and_restarted(caplog):
    options = CrashingOptions(image_size=16, max_steps=24, crash_init_state=6, crash_at_step=3, hang=True)
    env = SubprocessEnv(ResolvedComponent("env", "crashing", CrashingEnv, options), 6, workers=3, timeout_s=2.0)
    try:
        before = env.worker_pids
        with caplog.at_level(logging.WARNING):
            batch = collect(env, ScriptedPolicy(), [GroupSpec(0, 5), GroupSpec(3, 6)], 3)  # group 1 starts at state 6
        # workers 1 (envs 2, 3) and 2 (envs 4, 5) hold group 1's trajectories: both hang at step 3
        assert env.restarts == 2
        assert env.worker_pids[0] == before[0] and env.worker_pids[1] != before[1] and env.worker_pids[2] != before[2]
        messages = [r.getMessage() for r in caplog.records]
        assert sum("gave no answer for 2 s (killed) while running step_chunk" in m for m in messages) == 2, messages
        assert batch.dropped == 4 and batch.group_index.tolist() == [0, 0]  # group 0 keeps its two on worker 0
    finally:
        env.close()
