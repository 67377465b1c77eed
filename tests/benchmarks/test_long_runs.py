"""``benchmarks.long_runs`` on a hand-made run folder: the falls by hand."""

from __future__ import annotations

import json

import pytest

from benchmarks.long_runs import largest_fall, main, moving_mean


def test_largest_fall_and_moving_mean_by_hand():
    assert largest_fall([0.3, 0.6, 0.5, 0.7, 0.4, 0.8]) == pytest.approx(0.3)  # 0.7 -> 0.4
    assert largest_fall([0.1, 0.2, 0.3]) == 0.0
    assert moving_mean([0.3, 0.6, 0.5, 0.7, 0.4, 0.8]) == pytest.approx([14 / 30, 0.6, 16 / 30, 19 / 30])


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
