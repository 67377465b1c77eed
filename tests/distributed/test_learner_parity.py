"""Data-parallel learner == one process on the same global batch (float64, gloo on CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import parity_worker

pytestmark = pytest.mark.distributed


def _spawn(tmp_path: Path, world_size: int, sampler: str, strategy: str) -> list[dict]:
    folder = tmp_path / f"w{world_size}"
    folder.mkdir()
    mp.spawn(parity_worker.run_rank, args=(world_size, sampler, strategy, str(folder)), nprocs=world_size, join=True)
    return [torch.load(folder / f"rank_{r}.pt") for r in range(world_size)]


def _assert_same(a: dict, b: dict) -> None:
    assert torch.allclose(torch.tensor(a["loss"], dtype=torch.float64), torch.tensor(b["loss"], dtype=torch.float64), rtol=1e-12, atol=1e-14)
    assert torch.allclose(a["params"], b["params"], rtol=1e-12, atol=1e-14)
    assert torch.allclose(a["q"], b["q"], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
@pytest.mark.parametrize("sampler", ["all", "pcm"])
def test_two_ranks_match_one_process(tmp_path, sampler, strategy):
    one = _spawn(tmp_path, 1, sampler, strategy)[0]
    first, second = _spawn(tmp_path, 2, sampler, strategy)
    assert torch.equal(first["q"], second["q"])  # every rank holds the same q
    assert torch.equal(first["reference"], one["reference"]) and torch.equal(second["reference"], one["reference"])
    assert first["loss"] == second["loss"]  # the loss reported is the global one, on every rank
    _assert_same(first, one)
    _assert_same(second, one)
    # the run is not vacuous: the weights moved and q left uniform
    start = torch.cat([p.detach().flatten() for p in parity_worker.TinyBackend().module.parameters()])
    assert (one["params"] - start).abs().max() > 1e-3
    assert (one["q"][-1] - 1 / 3).abs().max() > 1e-3


@pytest.mark.parametrize("sampler", ["all", "pcm"])
def test_two_ranks_keep_the_chunks_of_the_plain_learner(tmp_path, sampler):
    """The one-process learner and two gloo ranks keep the same chunks of every trajectory (masks
    are drawn per trajectory from its global index) and make the same updates."""
    plain = parity_worker.run_single(sampler)
    first, second = _spawn(tmp_path, 2, sampler, "ddp")
    for step in range(parity_worker.STEPS):
        assert torch.equal(torch.cat([first["keep"][step], second["keep"][step]]), plain["keep"][step])
    if sampler == "pcm":  # the masks really are sampled: some chunks dropped, not the same in each step
        assert not bool(plain["keep"][0].all())
        assert not torch.equal(plain["keep"][0], plain["keep"][1])
    _assert_same(first, plain)
    _assert_same(second, plain)
    assert (first["params"] - plain["params"]).abs().max() < 1e-6


def test_a_nan_on_one_rank_skips_the_update_on_every_rank(tmp_path):
    mp.spawn(parity_worker.run_rank_with_a_nan, args=(2, str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"rank_{r}.pt") for r in range(2))
    assert first["skipped"] == second["skipped"] == 1  # rank 0's own loss was finite
    assert torch.equal(first["params"], second["params"])  # the replicas stayed equal


def test_torchrun_ranks_keep_the_chunks_of_one_process(tmp_path):
    """The same under torchrun (two gloo ranks, env:// rendezvous), for the pcm sampler: identical
    kept-chunk masks and the same first update as the one-process learner."""
    plain = parity_worker.run_single("pcm")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               parity_worker.__file__, "pcm", str(tmp_path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    first, second = (torch.load(tmp_path / f"rank_{r}.pt") for r in range(2))
    assert torch.equal(torch.cat([first["keep"][0], second["keep"][0]]), plain["keep"][0])
    assert not bool(plain["keep"][0].all())  # chunks were dropped
    assert first["loss"][0] == pytest.approx(plain["loss"][0], rel=1e-12)
    assert (first["params"] - plain["params"]).abs().max() < 1e-6
