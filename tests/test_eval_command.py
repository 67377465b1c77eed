"""`pcm-run eval`: per-task success with Wilson intervals, MP4s, fingerprint, a checkpoint's policy."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from pcm_core.cli import main
from pcm_core.evaluation import episode_plan, wilson_interval
from pcm_core.rollout import GroupSpec

TINY = ["--set", "train.tasks_per_step=1", "--set", "train.group_size=3", "--set", "train.sft.demos=4",
        "--set", "train.sft.epochs=1", "--set", "env.options.max_steps=64", "--set", "tracking.enabled=false"]


def test_wilson_interval_matches_the_textbook_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_episode_k_of_a_task_starts_from_initial_state_k():
    assert episode_plan([3, 5], 2) == [GroupSpec(3, 0), GroupSpec(3, 1), GroupSpec(5, 0), GroupSpec(5, 1)]


def test_eval_writes_per_task_report_videos_and_progress(tmp_path):
    log = tmp_path / "eval.log"
    with log.open("w") as stdout:  # not a terminal: progress as plain lines
        subprocess.run([sys.executable, "-m", "pcm_core.cli", "eval", *TINY,
                        "--set", f"train.sft.cache_dir={tmp_path / 'cache'}", "--set", f"train.output_dir={tmp_path / 'runs'}",
                        "--set", "evaluation.tasks=[0,2]", "--set", "evaluation.episodes_per_task=4"],
                       stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=True, timeout=300)
    (folder,) = (tmp_path / "runs").iterdir()
    report = json.loads((folder / "eval.json").read_text())
    assert [t["task"] for t in report["tasks"]] == [0, 2] and [t["episodes"] for t in report["tasks"]] == [4, 4]
    assert report["episodes"] == 8 and report["successes"] == sum(t["successes"] for t in report["tasks"])
    assert (report["low"], report["high"]) == pytest.approx(wilson_interval(report["successes"], 8))
    assert report["greedy"] is True and report["fingerprint"]["version.torch"].startswith("2.")
    names = sorted(p.name for p in (folder / "videos").iterdir())
    assert [re.fullmatch(r"eval_step000000_task(\d)_init0_(success|failure)\.mp4", n).group(1) for n in names] == ["0", "2"]
    table = (folder / "eval.md").read_text()
    assert "| 0 | put the red block on the" in table and "Wilson 95%" in table
    progress = [line for line in log.read_text().splitlines() if line.startswith("eval ") and "episodes" in line]
    assert [line.split()[1] for line in progress] == ["3/8", "6/8", "8/8"]  # one line per batch of 3 envs


def test_eval_of_a_checkpoint_goes_into_its_run(tmp_path, capsys):
    common = [*TINY, "--set", f"train.sft.cache_dir={tmp_path / 'cache'}", "--set", f"train.output_dir={tmp_path / 'runs'}"]
    main([*common, "--set", "train.steps=1", "--set", "train.eval_episodes=1"])
    main(["eval", *common, "--resume", "latest", "--set", "evaluation.tasks=[1]", "--set", "evaluation.episodes_per_task=2",
          "--set", "evaluation.videos_per_task=0"])
    (run,) = (tmp_path / "runs").iterdir()
    report = json.loads((run / "eval" / "step_000001" / "eval.json").read_text())
    assert report["episodes"] == 2 and report["videos"] == []
    assert "evaluating" in capsys.readouterr().out


def test_eval_of_tasks_the_env_does_not_have_is_two_lines(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["eval", *TINY, "--set", f"train.sft.cache_dir={tmp_path / 'cache'}", "--set", f"train.output_dir={tmp_path / 'runs'}",
              "--set", "evaluation.tasks=[99]"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(lines) == 2 and "outside 0.." in lines[0]
