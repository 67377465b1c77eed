"""``kill -9`` at every step of the checkpoint write protocol: ``latest`` always loads complete,
every ``step_*`` folder verifies, and what is left on disk is exactly what the protocol promises."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from pcm_core import checkpoint

SAVE_FSYNCS = 8
"""fsyncs of one ``checkpoint.save``: 1-3 the files (config.yaml, policy.safetensors, state.json),
4 manifest.json, 5 the temporary folder; it is then renamed to ``step_*``; 6 the checkpoints folder;
7 the new ``latest`` (a temporary file); it replaces ``latest``; 8 the checkpoints folder; then pruning."""

KILLS = 24


def kill_points(seed: int = 7) -> list[int]:
    """Each position of a save's fsyncs 3 times, in the 1st, 2nd or 3rd save of a writer (seeded)."""
    rng = random.Random(seed)
    return [SAVE_FSYNCS * rng.randrange(3) + i % SAVE_FSYNCS + 1 for i in range(KILLS)]


def expected_disk(kills: list[int], keep: int = 2) -> list[dict]:
    """What each kill leaves: ``latest`` step, ``step_*`` folders, a temporary folder or not."""
    latest, folders, seen = None, set(), []
    for kill_at in kills:
        resume = latest if latest is not None else max(folders, default=0)  # --resume: latest, else newest folder
        done, position = divmod(kill_at - 1, SAVE_FSYNCS)
        position += 1  # killed right before this fsync of save number done + 1
        for step in range(resume + 1, resume + 1 + done):  # complete saves: written, pointed to, pruned
            folders.add(step)
            latest = step
            older = sorted(f for f in folders if f <= step)
            folders -= set(older[:-keep])
        interrupted = resume + 1 + done
        if position >= 6:  # renamed into place before fsync 6
            folders.add(interrupted)
        if position == 8:  # latest replaced before fsync 8, not pruned yet
            latest = interrupted
        seen.append({"kill_at": kill_at, "latest": latest, "folders": sorted(folders), "mid_write": position <= 5})
    return seen


def test_the_expected_disk_states_by_hand():
    # 1st writer killed before fsync 5 of its 2nd save: step 1 complete, step 2 left in its temporary folder
    # 2nd: writes step 2, killed before fsync 7 of its 1st save: step 2 in place, latest still 1
    # 3rd: writes step 2 again, killed before fsync 8 of its 3rd save: 2 and 3 complete (1 pruned), 4 pointed, not pruned
    assert expected_disk([13, 7, 24]) == [
        {"kill_at": 13, "latest": 1, "folders": [1], "mid_write": True},
        {"kill_at": 7, "latest": 1, "folders": [1, 2], "mid_write": False},
        {"kill_at": 24, "latest": 4, "folders": [2, 3, 4], "mid_write": False},
    ]


def test_kill_9_during_checkpoint_writes(tmp_path):
    run_dir = tmp_path / "run"
    script = Path(__file__).with_name("checkpoint_killer.py")
    kills = kill_points()
    assert sorted((k - 1) % SAVE_FSYNCS for k in kills) == sorted(list(range(SAVE_FSYNCS)) * 3)  # every point, 3 times
    done = subprocess.run(
        [sys.executable, str(script), str(run_dir), ",".join(map(str, kills))], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == expected_disk(kills)
    steps = [s["latest"] for s in seen if s["latest"] is not None]
    assert steps == sorted(steps)  # resuming never goes back
    assert sum(s["mid_write"] for s in seen) == 15  # the kills before fsyncs 1-5 leave a write in progress
    # and the CLI's own lookup agrees: --resume latest gets a complete checkpoint
    assert checkpoint.load(checkpoint.locate("latest", tmp_path)).step == steps[-1]
