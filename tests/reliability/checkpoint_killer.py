"""Driven by test_kill9.py: a process that writes checkpoints in a loop is killed with SIGKILL at
chosen points, once per number given; after each kill, what is on disk is reported.

``python checkpoint_killer.py RUN_DIR K1,K2,...``: for each ``K``, a forked child resumes from
what the last one left (as ``--resume`` would: ``latest``, else the newest ``step_*`` folder)
and saves checkpoints forever; right before its ``K``-th ``os.fsync`` call it sends itself
SIGKILL. Every fsync of a save is such a point (``checkpoint.save`` makes 8 per save), so the
kills land at exact, repeatable steps of the write protocol instead of at random times.

After each kill the parent checks that ``latest`` loads complete (with the content written for
its step) and that every ``step_*`` folder verifies, and records the ``latest`` step, the
``step_*`` folders and whether a temporary folder was left mid-write. Prints one JSON line.
The parent does no torch work before the first fork.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path

import torch

from pcm_core import checkpoint


def write_until_killed(run_dir: Path, kill_at: int) -> None:
    torch.set_num_threads(1)
    fsync, calls = os.fsync, 0

    def counted_fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        fsync(fd)

    os.fsync = counted_fsync  # checkpoint calls os.fsync through the module: this child's saves hit it
    try:
        step = checkpoint.load(checkpoint.locate(str(run_dir), run_dir)).step + 1
    except checkpoint.CheckpointError:
        step = 1
    while True:
        weights = {f"layer{i}": torch.full((256, 1024), float(step + i)) for i in range(4)}  # 4 MiB
        saved = checkpoint.Checkpoint(step, {"policy": weights}, {"history": [{"step": step}]}, {"step": step})
        checkpoint.save(run_dir, saved, keep=2)
        step += 1


def observe(run_dir: Path) -> dict:
    root = run_dir / "checkpoints"
    folders = checkpoint.list_checkpoints(root)
    for folder in folders:
        checkpoint.verify(folder)  # raises if a step_* folder is incomplete
    latest = None
    if (root / checkpoint.LATEST).exists():
        loaded = checkpoint.load(checkpoint.locate("latest", run_dir.parent))  # raises if incomplete
        assert loaded.state["history"] == [{"step": loaded.step}]
        assert float(loaded.tensors["policy"]["layer3"][0, 0]) == loaded.step + 3
        latest = loaded.step
    return {
        "latest": latest,
        "folders": [int(checkpoint.STEP_DIR.match(f.name).group(1)) for f in folders],
        "mid_write": root.is_dir() and any(p.name.startswith((".tmp-", ".trash-")) for p in root.iterdir()),
    }


def main(run_dir: Path, kills: list[int]) -> None:
    seen = []
    for kill_at in kills:
        pid = os.fork()
        if pid == 0:  # child
            try:
                write_until_killed(run_dir, kill_at)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            raise SystemExit(f"the writer for kill point {kill_at} ended without SIGKILL (status {status})")
        seen.append({"kill_at": kill_at, **observe(run_dir)})
    print(json.dumps(seen))


if __name__ == "__main__":
    main(Path(sys.argv[1]), [int(k) for k in sys.argv[2].split(",")])
