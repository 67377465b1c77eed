"""``benchmarks.long_runs`` on a hand-made run folder: the falls by hand."""

from __future__ import annotations

import json

import pytest

from benchmarks.long_runs import largest_fall, main, moving_mean, never_falling, noise_falls


def test_largest_fall_and_moving_mean_by_hand():
    assert largest_fall([0.3, 0.6, 0.5, 0.7, 0.4, 0.8]) == pytest.approx(0.3)  # 0.7 -> 0.4
    assert largest_fall([0.1, 0.2, 0.3]) == 0.0
    assert moving_mean([0.3, 0.6, 0.5, 0.7, 0.4, 0.8]) == pytest.approx([14 / 30, 0.6, 16 / 30, 19 / 30])


def test_never_falling_is_the_running_best_of_the_centred_moving_mean():
    means = [14 / 30, 0.6, 16 / 30, 19 / 30]  # the moving means of the sequence above
    curve = never_falling([0.3, 0.6, 0.5, 0.7, 0.4, 0.8])
    assert curve == pytest.approx([means[0], means[0], means[1], means[1], means[3], means[3]])


def test_noise_falls_by_hand():
    certain = noise_falls([1.0, 0.0, 0.0], episodes=1, draws=10)  # every draw is 1, 0, 0: mean of 3 is one value
    assert certain == {"fall_points": 100.0, "moving_mean_fall_points": 0.0, "within_line": 0.0, "moving_mean_within_line": 1.0}
    coin = noise_falls([0.5, 0.5, 0.5], episodes=1)  # a 1 before a 0 in 4 of the 8 sequences
    assert coin["fall_points"] == pytest.approx(50.0, abs=2.0)
    assert coin["within_line"] == pytest.approx(0.5, abs=0.02)


def test_long_runs_reads_the_latest_checkpoint_of_each_run(tmp_path):
    run = tmp_path / "run"
    rows = [{"step": 0, "eval_success_rate": 0.3}] + [
        {"step": s, "entropy": 0.1, **({"eval_success_rate": v} if v is not None else {})}
        for s, v in [(5, None), (10, 0.6), (20, 0.5), (30, 0.7), (40, 0.4), (50, 0.8)]
    ]
    (run / "checkpoints" / "step_000050").mkdir(parents=True)
    (run / "checkpoints" / "step_000050" / "state.json").write_text(json.dumps({"history": rows}))
    (run / "checkpoints" / "latest").write_text("step_000050\n")
    result = main([f"0={run}", "--out", str(tmp_path / "out")])
    summary = result["runs"]["0"]
    assert (summary["warm_start"], summary["best"], summary["best_step"], summary["final"]) == (0.3, 0.8, 50, 0.8)
    assert summary["largest_fall_points"] == pytest.approx(30.0)
    assert summary["largest_moving_mean_fall_points"] == pytest.approx(100 * (0.6 - 16 / 30))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["long_runs.json", "long_runs.md", "long_runs.png"]
    assert "| 0 | 0.300 | 0.800 (step 50) | 0.800 | 30.0 | 6.7 |" in (tmp_path / "out" / "long_runs.md").read_text()
    again = main([f"0={tmp_path / 'out' / 'long_runs.json'}", "--out", str(tmp_path / "again")])["runs"]["0"]
    assert json.loads(json.dumps(again)) == json.loads(json.dumps(summary))  # a stored long_runs.json gives the same summary
