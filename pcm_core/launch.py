"""``pcm-run --nproc N``: start N learner processes on this machine through torchrun."""

from __future__ import annotations

import subprocess
import sys

from pcm_core.distributed import launched
from pcm_core.errors import ConfigError


def torchrun(nproc: int, args: list[str]) -> int:
    """Run ``python -m torch.distributed.run --standalone --nproc-per-node nproc -m pcm_core.cli *args``
    and return its exit code (torchrun forwards Ctrl-C and SIGTERM to every rank)."""
    if launched():
        raise ConfigError(
            f"--nproc {nproc} inside a process that torchrun already started.\n"
            "Fix: drop --nproc (torchrun's --nproc-per-node sets the number of ranks)"
        )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "pcm_core.cli", *args]
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 130
