"""SIGTERM to ``pcm-run --nproc 2``: the ranks stop after the same step and write a checkpoint,
and no rank outlives the ``pcm-run`` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pcm_core import checkpoint

pytestmark = pytest.mark.distributed

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_runner_ranks import TINY, _sets  # noqa: E402


def _running(marker: str) -> list[str]:
    """Command lines of the processes that mention ``marker``."""
    found = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout.splitlines()
    return [line for line in found if "pgrep" not in line]


def test_sigterm_stops_every_rank_with_a_checkpoint(tmp_path):
    output = tmp_path / "stop_ranks_runs"
    args = _sets(*TINY, f"train.output_dir={output}", "train.steps=100000", "train.checkpoint_every=1")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen([sys.executable, "-m", "pcm_core.cli", "--nproc", "2", *args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(output.glob("*/checkpoints/step_*")):  # a first step is done (older ones get pruned)
        assert time.monotonic() < deadline and parent.poll() is None, parent.communicate()
        time.sleep(0.5)
    parent.send_signal(signal.SIGTERM)
    out, err = parent.communicate(timeout=300)
    assert "stopped by SIGTERM after step" in out, out[-2000:] + err[-2000:]
    assert _running(str(output)) == []  # torchrun and both ranks are gone
    saved = checkpoint.load(checkpoint.locate("latest", output))
    assert saved.step >= 1 and saved.state["history"][-1]["ranks"] == 2.0
    stopped_at = int(out.split("stopped by SIGTERM after step ")[1].split(";")[0])
    assert saved.step == stopped_at  # the stop checkpoint is the latest
