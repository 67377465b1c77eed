"""A tabletop env that really segfaults (or hangs), for the env-worker tests (imported by module path in the
worker processes)."""

from __future__ import annotations

import os
import resource
import signal
import time
from typing import Sequence

import numpy as np
from pydantic import Field

from pcm_core.interfaces import StepResult
from pcm_tabletop.env import TabletopEnv, TabletopOptions


class CrashingOptions(TabletopOptions):
    crash_on_build: bool = Field(False, description="segfault in __init__")
    crash_init_state: int | None = Field(None, description="segfault in an episode that has this initial state ...")
    crash_at_step: int = Field(3, ge=1, description="... at this step of the episode")
    hang: bool = Field(False, description="hang (sleep for an hour) instead of segfaulting")


def segfault() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
    os.kill(os.getpid(), signal.SIGSEGV)


class CrashingEnv(TabletopEnv):
    Options = CrashingOptions

    def __init__(self, options: CrashingOptions, num_envs: int, seed: int = 0) -> None:
        if options.crash_on_build:
            segfault()
        super().__init__(options, num_envs, seed)
        self.doomed = False

    def reset(self, task_ids: Sequence[int], init_states: Sequence[int]) -> tuple[dict[str, np.ndarray], list[str]]:
        self.doomed = self.options.crash_init_state in [int(s) for s in init_states]
        return super().reset(task_ids, init_states)

    def _advance(self, actions: np.ndarray, observe: bool) -> StepResult:  # under step and step_chunk
        if self.doomed and int(self.steps.max()) + 1 == self.options.crash_at_step:
            time.sleep(3600) if self.options.hang else segfault()
        return super()._advance(actions, observe)
