"""The LIBERO throughput benchmark runs in its tiny mode and writes JSON + markdown + PNG."""

from __future__ import annotations

import json

import pytest

from benchmarks.__main__ import main

pytestmark = pytest.mark.libero


def test_libero_env_throughput_tiny(tmp_path):
    assert main(["libero_env_throughput", "--quick", "--tiny", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "libero_env_throughput.json").read_text())
    assert [(r["processes"], r["image_size"]) for r in result["rows"]] == [(1, 64), (2, 64)]
    assert all(r["steps_per_s"]["median"] > 0 for r in result["rows"])
    assert (tmp_path / "libero_env_throughput.png").stat().st_size > 0
    assert "| 2 | 64x64 |" in (tmp_path / "libero_env_throughput.md").read_text()
