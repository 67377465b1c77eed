"""Exact resume: 6 steps in one go == 3 steps, stop, resume for 3 more (metrics and weights)."""

from __future__ import annotations

import mlflow
import torch

from pcm_core import checkpoint
from pcm_core.cli import main


def _final(output):
    return checkpoint.load(checkpoint.locate("latest", output))


def _comparable(history):
    return [{k: v for k, v in row.items() if not k.startswith("time/") and k != "eval_success_rate"} for row in history]


def test_resume_is_exact(tiny_args, tmp_path, learning_signal):
    main(tiny_args(tmp_path / "whole", "train.steps=6"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    main(tiny_args(tmp_path / "split", "train.steps=3", tracking=uri))
    first = _final(tmp_path / "split")
    assert first.step == 3
    main(["--resume", "latest", "--set", f"train.output_dir={tmp_path / 'split'}", "--set", "train.steps=6"])

    whole, split = _final(tmp_path / "whole"), _final(tmp_path / "split")
    assert whole.step == split.step == 6
    assert [row["step"] for row in split.state["history"]] == [0, 1, 2, 3, 4, 5, 6]
    assert _comparable(split.state["history"]) == _comparable(whole.state["history"])
    assert whole.state["history"][-1]["eval_success_rate"] == split.state["history"][-1]["eval_success_rate"]
    # the weights moved (the test would be vacuous otherwise) and end bit-identical
    assert any(row["loss"] != 0.0 for row in whole.state["history"][1:])
    start = first.tensors["policy"]
    assert any(not torch.equal(start[k], v) for k, v in whole.tensors["policy"].items())
    for name, tensor in whole.tensors["policy"].items():
        assert torch.equal(tensor, split.tensors["policy"][name]), name
    for name, tensor in whole.tensors["optimizer"].items():
        assert torch.equal(tensor, split.tensors["optimizer"][name]), name
    assert torch.equal(whole.tensors["pcm"]["q"], split.tensors["pcm"]["q"])

    # one MLflow run, continued: steps 1..6 and the same run id in both checkpoints
    assert first.state["run_id"] == split.state["run_id"]
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs(client.get_experiment_by_name("pcm-vla").experiment_id)
    assert run.info.run_id == split.state["run_id"] and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4, 5, 6]


def test_the_first_steps_of_a_longer_run_are_the_shorter_run(tiny_args, tmp_path, learning_signal):
    """Nothing in training depends on train.steps, so benchmarks may read a 50-step run off the
    first 50 steps of a 100-step one (benchmarks.warm_starts.from_time_to_success)."""
    main(tiny_args(tmp_path / "short", "train.steps=2", "train.checkpoint_every=1"))
    main(tiny_args(tmp_path / "long", "train.steps=3", "train.checkpoint_every=1", "train.keep_checkpoints=5"))
    short = checkpoint.load(checkpoint.locate("latest", tmp_path / "short"))
    long_run = next((tmp_path / "long").iterdir())
    at_two = checkpoint.load(long_run / "checkpoints" / "step_000002")
    for name, tensor in short.tensors["policy"].items():
        assert torch.equal(tensor, at_two.tensors["policy"][name]), name
    keys = ("success_rate", "loss", "entropy")
    assert [[row.get(k) for k in keys] for row in short.state["history"]] == [[row.get(k) for k in keys] for row in at_two.state["history"]]
