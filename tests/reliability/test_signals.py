"""SIGINT during the rollout or the backward pass: checkpoint, resume command, exit 0; a
second SIGINT exits 130 at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import pcm_core.runner

from pcm_core import checkpoint
from pcm_core.cli import main

SCRIPT = Path(__file__).with_name("interrupted_run.py")


def _run(mode: str, output: Path, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), mode, str(output), str(cache)], capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "COLUMNS": "200"},
    )


@pytest.mark.parametrize("where", ["rollout", "backward"])
def test_sigint_checkpoints_and_exits_0(where, tmp_path, cache_dir, monkeypatch):
    done = _run(where, tmp_path / "runs", cache_dir)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    assert "SIGINT: stopping after this step" in done.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    path = run_dir / "checkpoints" / "step_000002"
    assert f"resume with: pcm-run --resume {path}" in done.stdout.replace("\n", "")
    saved = checkpoint.load(checkpoint.locate("latest", tmp_path / "runs"))
    assert saved.path == path and [row["step"] for row in saved.state["history"]] == [0, 1, 2]
    if where == "rollout":  # the printed command continues the run to its end, without a warm start
        monkeypatch.setattr(pcm_core.runner, "warm_start", lambda *a, **k: pytest.fail("warm start on resume"))
        main(["--resume", str(path), "--set", "train.sft.enabled=true"])
        final = checkpoint.load(checkpoint.locate(str(run_dir), tmp_path))
        assert final.step == 4 and [row["step"] for row in final.state["history"]] == [0, 1, 2, 3, 4]


def test_second_sigint_exits_130(tmp_path, cache_dir):
    done = _run("rollout_twice", tmp_path / "runs", cache_dir)
    assert done.returncode == 130, done.stderr[-1500:]
    assert done.stderr.strip().splitlines()[-1] == "pcm-run: interrupted"
    assert "Traceback" not in done.stderr
