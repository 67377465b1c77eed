"""One process per run folder: an exclusive ``flock`` on ``<run>/run.lock`` while a run is open.

Two processes resumed from the same checkpoint would otherwise both write into one
``checkpoints/`` folder, one silently replacing the other's checkpoints. The lock is the
kernel's, so it is released when its process dies, even by ``kill -9``.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from pcm_core.errors import PcmError

LOCK_FILE = "run.lock"


class RunFolderBusy(PcmError):
    """Another process holds the run folder."""


class RunLock:
    """The held lock of one run folder; :meth:`release` (or the process's end) frees it."""

    def __init__(self, handle, path: Path) -> None:
        self.handle, self.path = handle, path

    @classmethod
    def acquire(cls, run_dir: Path) -> "RunLock":
        """Lock ``run_dir`` or raise :class:`RunFolderBusy` naming the process that holds it."""
        path = run_dir / LOCK_FILE
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunFolderBusy(
                f"run folder '{run_dir}' is in use by another pcm-run (pid {holder}).\n"
                "Fix: wait for that run to finish (or stop it), then resume; two runs must not share a folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return cls(handle, path)

    def release(self) -> None:
        if not self.handle.closed:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
