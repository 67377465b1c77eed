"""``pcm-run --nproc N``: start N learner processes on this machine through torchrun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from pcm_core.distributed import launched
from pcm_core.errors import ConfigError

SHUTDOWN_TIMEOUT_S = 600
"""Seconds torchrun lets the ranks finish their step and checkpoint after a stop signal before it
kills them (torchrun's own default is 30; ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` overrides this)."""


def torchrun(nproc: int, args: list[str]) -> int:
    """Run ``python -m torch.distributed.run --standalone --nproc-per-node nproc -m pcm_core.cli *args``
    and return its exit code.

    torchrun runs in its own session, and this process passes each SIGINT (Ctrl-C) and SIGTERM it
    gets on to it, then keeps waiting: torchrun sends the signal to every rank, the ranks stop after
    the current step and write a checkpoint, and no rank outlives ``pcm-run``.
    """
    if launched():
        raise ConfigError(
            f"--nproc {nproc} inside a process that torchrun already started.\n"
            "Fix: drop --nproc (torchrun's --nproc-per-node sets the number of ranks)"
        )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "pcm_core.cli", *args]
    env = {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT_S), **os.environ}
    process = subprocess.Popen(command, env=env, start_new_session=True)

    def forward(signum: int, frame: Any) -> None:
        process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
