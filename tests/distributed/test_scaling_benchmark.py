"""``python -m benchmarks distributed_scaling`` in its tiny mode writes JSON + markdown + PNG (no timing asserted)."""

import json

import pytest

from benchmarks.__main__ import main

pytestmark = pytest.mark.distributed


def test_distributed_scaling_tiny_writes_outputs(tmp_path):
    assert main(["distributed_scaling", "--quick", "--tiny", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "distributed_scaling.json").read_text())
    assert sorted(result["rollouts"]) == ["0", "1", "2"] and sorted(result["learner"]) == ["1", "2", "batch"]
    assert result["learner"]["batch"]["trajectories"] == 4
    for ranks in ("1", "2"):
        assert result["learner"][ranks]["step_s"]["n"] == 1
    assert "multi-GPU node" in (tmp_path / "distributed_scaling.md").read_text()
    assert (tmp_path / "distributed_scaling.png").read_bytes()[:4] == b"\x89PNG"
