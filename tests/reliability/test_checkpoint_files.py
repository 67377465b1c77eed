"""Checkpoint files: atomic layout, keep-last-N, verification, and loading never runs code."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from pcm_core import checkpoint
from pcm_core.checkpoint import Checkpoint, CheckpointError
from pcm_core.cli import main


def _checkpoint(step: int) -> Checkpoint:
    tensors = {"policy": {"w": torch.full((3, 2), float(step))}, "rng": {"torch": torch.get_rng_state()}}
    return Checkpoint(step, tensors, {"history": [{"step": step}], "run_id": None}, {"train": {"steps": 9}})


def _write(run_dir, steps=(1, 2, 3), keep=3):
    return [checkpoint.save(run_dir, _checkpoint(s), keep=keep) for s in steps]


def test_round_trip_latest_and_keep_last(tmp_path):
    paths = _write(tmp_path, steps=(1, 2, 3, 4), keep=2)
    root = tmp_path / "checkpoints"
    assert [p.name for p in checkpoint.list_checkpoints(root)] == ["step_000003", "step_000004"]
    assert (root / "latest").read_text().strip() == "step_000004"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_000003", "step_000004"]
    loaded = checkpoint.load(checkpoint.locate(str(tmp_path), tmp_path))
    assert loaded.step == 4 and loaded.path == paths[-1]
    assert torch.equal(loaded.tensors["policy"]["w"], torch.full((3, 2), 4.0))
    assert loaded.state["history"] == [{"step": 4}] and loaded.config == {"train": {"steps": 9}}


def test_truncated_checkpoint_is_rejected_and_previous_offered(tmp_path):
    paths = _write(tmp_path)
    weights = paths[-1] / "policy.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(paths[-1])
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert "policy.safetensors has the wrong size for its manifest entry" in lines[0]
    assert lines[1] == f"Fix: resume from the previous one: pcm-run --resume {paths[-2]}"


def _no_hang():
    """Fail (SIGALRM) instead of hanging when loading blocks on a special file."""
    import signal

    def fail(*_):
        raise AssertionError("checkpoint loading blocked")

    signal.signal(signal.SIGALRM, fail)
    signal.alarm(20)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-link", "link-to-copy", "directory"])
def test_special_files_are_rejected_without_reading_them(tmp_path, kind):
    import os
    import signal

    paths = _write(tmp_path, steps=(1, 2))
    weights = paths[-1] / "policy.safetensors"
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(weights.read_bytes())
    weights.unlink()
    {"fifo": lambda: os.mkfifo(weights), "dev-zero-link": lambda: weights.symlink_to("/dev/zero"),
     "link-to-copy": lambda: weights.symlink_to(copy), "directory": lambda: weights.mkdir()}[kind]()
    _no_hang()
    try:
        with pytest.raises(CheckpointError) as info:
            checkpoint.load(paths[-1])
    finally:
        signal.alarm(0)
    lines = str(info.value).splitlines()
    assert "policy.safetensors is not a regular file" in lines[0]
    assert lines[1] == f"Fix: resume from the previous one: pcm-run --resume {paths[-2]}"


def test_a_manifest_that_is_a_folder_is_rejected(tmp_path):
    paths = _write(tmp_path, steps=(1,))
    (paths[0] / "manifest.json").unlink()
    (paths[0] / "manifest.json").mkdir()
    with pytest.raises(CheckpointError, match="manifest.json is not a regular file"):
        checkpoint.load(paths[0])


def test_missing_manifest_is_rejected(tmp_path):
    paths = _write(tmp_path, steps=(1,))
    (paths[0] / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="no manifest.json"):
        checkpoint.load(paths[0])


class _Payload:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _rehash(path):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"] = {
        p.name: {"sha256": checkpoint._sha256(p), "bytes": p.stat().st_size}
        for p in sorted(path.iterdir())
        if p.name != "manifest.json"
    }
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("attack", ["swap_weights", "swap_weights_and_manifest", "extra_pickle_file", "torch_save"])
def test_pickle_payload_is_never_executed(tmp_path, attack, capsys):
    paths = _write(tmp_path, steps=(1, 2))
    target = paths[-1]
    marker = tmp_path / "marker"
    payload = pickle.dumps(_Payload(marker))
    if attack.startswith("swap_weights"):
        (target / "policy.safetensors").write_bytes(payload)
    elif attack == "extra_pickle_file":
        (target / "optimizer.pt").write_bytes(payload)
    else:  # a torch.save zip whose data.pkl carries the payload
        torch.save(_Payload(marker), target / "policy.safetensors")
    if attack != "swap_weights":
        _rehash(target)  # the attacker also fixes the manifest: the file types must still stop it
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(target)
    assert len(str(info.value).splitlines()) == 2
    assert str(paths[0]) in str(info.value)  # the previous, intact checkpoint is offered
    with pytest.raises(SystemExit) as exit_info:  # the same through pcm-run
        main(["--resume", str(target), "--dry-run"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "rejected" in err[0]
    assert not marker.exists()


def test_locate_latest_finds_the_newest_run(tmp_path):
    _write(tmp_path / "runA", steps=(1,))
    _write(tmp_path / "runB", steps=(5,))
    assert checkpoint.locate("latest", tmp_path).name == "step_000005"
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        checkpoint.locate("latest", tmp_path / "nothing")


@pytest.mark.parametrize("tamper", ["model-size", "state-json"])
def test_a_checkpoint_that_does_not_fit_the_run_is_two_lines(tiny_args, tmp_path, capsys, tamper):
    """Consistently hashed but wrong: another model size, or a state.json edited and re-hashed."""
    import hashlib

    main(tiny_args(tmp_path, "train.steps=1"))
    saved = checkpoint.locate("latest", tmp_path)
    resume = ["--resume", str(saved), "--set", "train.steps=2"]
    if tamper == "model-size":
        resume += ["--set", "policy.options.hidden_size=64"]
    else:
        state = json.loads((saved / "state.json").read_text())
        state["faults"] = "nothing"
        (saved / "state.json").write_text(json.dumps(state))
        manifest = json.loads((saved / "manifest.json").read_text())
        data = (saved / "state.json").read_bytes()
        manifest["files"]["state.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        (saved / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(resume)
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 2, err
    assert "does not fit this run" in err[0] and "Traceback" not in "".join(err)


def test_a_second_process_on_one_run_folder_is_refused(tiny_args, tmp_path, capsys):
    """Another process resuming the same run holds its folder (flock, released at exit): refused, nothing written."""
    import subprocess
    import sys

    main(tiny_args(tmp_path, "train.steps=1"))
    saved = checkpoint.locate("latest", tmp_path)
    run_dir = saved.parent.parent
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from pcm_core.run_lock import RunLock; lock = RunLock.acquire(Path(sys.argv[1])); "
                               "print('held', flush=True); time.sleep(60)", str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            main(["--resume", str(saved), "--set", "train.steps=2"])
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and len(err) == 2, err
        assert f"run folder '{run_dir}' is in use by another pcm-run (pid {holder.pid})" in err[0]
        assert [p.name for p in checkpoint.list_checkpoints(run_dir / "checkpoints")] == ["step_000001"]
    finally:
        holder.kill()
        holder.wait()
    main(["--resume", str(saved), "--set", "train.steps=2"])  # the holder is gone: the lock went with it
    assert checkpoint.locate("latest", tmp_path).name == "step_000002"
