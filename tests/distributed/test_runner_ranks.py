"""pcm-run under torchrun: rank 0 alone writes the run, and a run resumes with another number of ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pcm_core import checkpoint

pytestmark = pytest.mark.distributed

HERE = Path(__file__).resolve().parent
TINY = [
    "train.tasks_per_step=2", "train.group_size=2", "train.eval_episodes=2", "train.eval_every=0",
    "train.sft.enabled=false", "train.threads=1", "env.options.max_steps=16", "env.options.image_size=16",
    "policy.options.hidden_size=32", "policy.options.num_layers=1", "policy.options.num_heads=2",
    "policy.options.intermediate_size=64", "policy.options.image_size=16", "policy.options.patch_size=8", "pcm.budget=2",
    "tracking.enabled=false", "train.lr=0.01",
]


def _run(nproc: int, *args: str) -> None:
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*launcher, str(HERE / "signal_run.py"), *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _sets(*values: str) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def test_two_ranks_then_resume_on_one(tmp_path):
    output = tmp_path / "runs"
    _run(2, *_sets(*TINY, f"train.output_dir={output}", "train.steps=2", "train.checkpoint_every=1"))
    (run_dir,) = output.iterdir()  # one run folder: the other rank created none
    roots = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert roots == ["latest", "step_000001", "step_000002"]  # written once each, no leftovers
    two = checkpoint.load(checkpoint.locate("latest", output))
    assert [row.get("ranks") for row in two.state["history"]] == [None, 2.0, 2.0]
    assert any(row["grad_norm"] > 0.0 for row in two.state["history"][1:])  # the weights moved (the loss of balanced groups at ratio 1 is 0)

    _run(1, "--resume", "latest", *_sets(f"train.output_dir={output}", "train.steps=3"))
    one = checkpoint.load(checkpoint.locate("latest", output))
    assert one.step == 3 and [row["step"] for row in one.state["history"]] == [0, 1, 2, 3]
    assert one.state["history"][:3] == two.state["history"]
    assert "ranks" not in one.state["history"][3]
    assert any(not torch.equal(two.tensors["policy"][k], v) for k, v in one.tensors["policy"].items())

    _run(2, "--resume", "latest", *_sets(f"train.output_dir={output}", "train.steps=4"))
    back = checkpoint.load(checkpoint.locate("latest", output))
    assert back.step == 4 and back.state["history"][4]["ranks"] == 2.0
    assert float(back.tensors["optimizer"]["state/0/step"]) == 4.0  # Adam's step count went on across rank counts


def test_fsdp_checkpoint_holds_full_tensors_and_resumes_on_one_rank(tmp_path):
    """Also: training goes on after a mid-run checkpoint (its state_dict reshards the weights)."""
    output = tmp_path / "runs"
    _run(2, *_sets(*TINY, f"train.output_dir={output}", "train.steps=2", "train.checkpoint_every=1",
                   "distributed.strategy=fsdp", "train.kl_coef=0.01"))  # the KL reference: a full replica per rank
    sharded = checkpoint.load(checkpoint.locate("latest", output))
    assert sharded.step == 2
    _run(1, "--resume", "latest", *_sets(f"train.output_dir={output}", "train.steps=3"))
    plain = checkpoint.load(checkpoint.locate("latest", output))
    assert sharded.tensors["policy"].keys() == plain.tensors["policy"].keys() == sharded.tensors["reference"].keys()
    for name, tensor in plain.tensors["policy"].items():
        assert sharded.tensors["policy"][name].shape == tensor.shape, name  # gathered, not one rank's shard
        assert sharded.tensors["reference"][name].shape == tensor.shape, name
    for name, tensor in plain.tensors["optimizer"].items():
        assert sharded.tensors["optimizer"][name].shape == tensor.shape, name
    assert plain.step == 3 and sharded.state["history"][2]["ranks"] == 2.0
