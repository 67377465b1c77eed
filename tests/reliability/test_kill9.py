"""``kill -9`` at random points during checkpoint writes: ``latest`` always loads complete."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pcm_core import checkpoint

KILLS = 20


def test_kill_9_during_checkpoint_writes(tmp_path):
    run_dir = tmp_path / "run"
    script = Path(__file__).with_name("checkpoint_killer.py")
    done = subprocess.run(
        [sys.executable, str(script), str(run_dir), str(KILLS), "7"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    steps = [s for s in report["latest_steps"] if s is not None]
    assert len(steps) >= KILLS - 2  # all but the earliest kills land after a first checkpoint exists
    assert steps == sorted(steps)  # resuming never goes back
    assert report["left_mid_write"] >= 3  # the kills really hit writes in progress
    # and the CLI's own lookup agrees: --resume latest gets a complete checkpoint
    assert checkpoint.load(checkpoint.locate("latest", tmp_path)).step == steps[-1]
