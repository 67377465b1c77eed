"""Driven by test_kill9.py: kill -9 a process at random points while it writes checkpoints in a
loop, ``KILLS`` times; after each kill, ``latest`` must load as a complete checkpoint.

A forked child does the writing (so the parent pays for importing torch once); the parent does
no torch work before forking, so the fork is safe. Prints one JSON line with what it saw.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import torch

from pcm_core import checkpoint


def write_forever(run_dir: Path) -> None:
    torch.set_num_threads(1)
    try:
        step = checkpoint.load(checkpoint.locate(str(run_dir), run_dir)).step + 1
    except checkpoint.CheckpointError:
        step = 1
    while True:
        weights = {f"layer{i}": torch.full((256, 1024), float(step + i)) for i in range(4)}  # 4 MiB
        saved = checkpoint.Checkpoint(step, {"policy": weights}, {"history": [{"step": step}]}, {"step": step})
        checkpoint.save(run_dir, saved, keep=2)
        step += 1


def main(run_dir: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    mid_write, steps = 0, []
    for _ in range(kills):
        pid = os.fork()
        if pid == 0:  # child
            try:
                write_forever(run_dir)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        root = run_dir / "checkpoints"
        mid_write += any(p.name.startswith((".tmp-", ".trash-")) for p in root.iterdir()) if root.is_dir() else 0
        if not (root / "latest").exists():
            steps.append(None)
            continue
        loaded = checkpoint.load(checkpoint.locate("latest", run_dir.parent))  # raises if incomplete
        assert loaded.state["history"] == [{"step": loaded.step}]
        assert float(loaded.tensors["policy"]["layer3"][0, 0]) == loaded.step + 3
        steps.append(loaded.step)
    print(json.dumps({"kills": kills, "left_mid_write": mid_write, "latest_steps": steps}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
