"""Faults during a run: a NaN loss never reaches the weights; a dead tracking server costs one
warning and the metrics land in the local store."""

from __future__ import annotations

import math
import socket

import mlflow
import pytest
import torch

from pcm_core import checkpoint
from pcm_core.cli import main
from pcm_core.learner import Learner


@pytest.fixture
def nan_on_updates(monkeypatch):
    """``nan_on_updates(*n)``: in the n-th learner update (1-based; -1: every one) the policy's
    ``log_probs`` return NaN, so the loss and every gradient are NaN."""

    def install(*which: int):
        original, count = Learner.backward, {"n": 0}

        def backward(self, batch):
            count["n"] += 1
            if count["n"] not in which and -1 not in which:
                return original(self, batch)
            clean = type(self.policy).log_probs
            with monkeypatch.context() as patch:
                patch.setattr(self.policy, "log_probs", lambda *a, **k: clean(self.policy, *a, **k) * float("nan"))
                return original(self, batch)

        monkeypatch.setattr(Learner, "backward", backward)

    return install


def test_nan_loss_skips_the_update(tiny_args, tmp_path, learning_signal, nan_on_updates):
    nan_on_updates(2)
    main(tiny_args(tmp_path, "train.steps=3", "train.checkpoint_every=1", "train.keep_checkpoints=5"))
    root = next(tmp_path.iterdir()) / "checkpoints"
    one, two, three = (checkpoint.load(root / f"step_00000{i}") for i in (1, 2, 3))
    for name, tensor in one.tensors["policy"].items():
        assert torch.equal(tensor, two.tensors["policy"][name]), name  # weights unchanged by step 2
    for name, tensor in one.tensors["optimizer"].items():
        assert torch.equal(tensor, two.tensors["optimizer"][name]), name  # Adam's moments too
    assert any(not torch.equal(t, three.tensors["policy"][k]) for k, t in two.tensors["policy"].items())
    history = three.state["history"]
    assert [row["faults/skipped_updates"] for row in history[1:]] == [0.0, 1.0, 1.0]
    assert math.isfinite(history[3]["loss"])  # step 3 is finite again: the run went on
    assert not math.isfinite(history[2]["loss"])  # (the skipped step logged its NaN loss)


def test_a_non_finite_update_is_undone(tiny_args, tmp_path, learning_signal, monkeypatch):
    """A finite loss and gradient, but an infinite learning rate (past validation, which refuses it):
    the step that made the weights non-finite is undone, weights and Adam state, and counted as skipped."""
    original, count = Learner._set_learning_rate, {"n": 0}

    def set_learning_rate(self):
        original(self)
        count["n"] += 1
        if count["n"] == 2:
            for group in self.optimizer.param_groups:
                group["lr"] = float("inf")

    monkeypatch.setattr(Learner, "_set_learning_rate", set_learning_rate)
    main(tiny_args(tmp_path, "train.steps=3", "train.checkpoint_every=1", "train.keep_checkpoints=5"))
    root = next(tmp_path.iterdir()) / "checkpoints"
    one, two, three = (checkpoint.load(root / f"step_00000{i}") for i in (1, 2, 3))
    for name, tensor in one.tensors["policy"].items():
        assert torch.equal(tensor, two.tensors["policy"][name]), name
    for name, tensor in one.tensors["optimizer"].items():
        assert torch.equal(tensor, two.tensors["optimizer"][name]), name
    assert all(torch.isfinite(t).all() for t in three.tensors["policy"].values())
    history = three.state["history"]
    assert [row["faults/skipped_updates"] for row in history[1:]] == [0.0, 1.0, 1.0]
    assert math.isfinite(history[2]["loss"])  # the loss was fine: the update was not


def test_consecutive_nans_stop_the_run_with_a_checkpoint(tiny_args, tmp_path, learning_signal, nan_on_updates, capsys):
    nan_on_updates(-1)  # every update
    with pytest.raises(SystemExit) as info:
        main(tiny_args(tmp_path, "train.steps=5", "train.max_skipped_updates=2"))
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert "2 consecutive updates had a NaN/inf loss, gradient or update; stopped at step 2" in err[0]
    saved = checkpoint.load(checkpoint.locate("latest", tmp_path))
    assert saved.step == 2 and saved.state["faults"]["skipped_updates"] == 2
    assert err[1].endswith(f"pcm-run --resume {saved.path}")


def test_unreachable_tracking_server(tiny_args, tmp_path, capsys):
    with socket.socket() as probe:  # held bound, never listening: connections are refused, no one else can take the port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        main(tiny_args(tmp_path / "runs", "train.steps=2", tracking=f"http://127.0.0.1:{port}"))
    out = capsys.readouterr().out.replace("\n", "")
    assert out.count("warning: MLflow tracking at") == 1
    (run_dir,) = (tmp_path / "runs").iterdir()
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs(client.get_experiment_by_name("pcm-vla").experiment_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["pcm.budget"] == "4"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval_success_rate")] == [0, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "kept_chunk_fraction")] == [1, 2]


def test_an_unwritable_warm_start_cache_fails_before_the_cloning(tmp_path, capsys):
    import os

    if os.geteuid() == 0:  # root writes anywhere: point the cache below a file instead
        cache = tmp_path / "a_file" / "cache"
        (tmp_path / "a_file").write_text("")
    else:
        cache = tmp_path / "read_only"
        cache.mkdir(mode=0o500)
    with pytest.raises(SystemExit) as info:
        main(["--set", f"train.sft.cache_dir={cache}", "--set", "tracking.enabled=false", "--set", f"train.output_dir={tmp_path / 'runs'}",
              "--set", "train.sft.demos=1000000"])  # a million demonstrations: failing after them would take hours
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 2, err
    assert "is not writable" in err[0] and "train.sft.cache_dir" in err[1]
