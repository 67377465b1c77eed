"""Trackers: one tiny run logs to MLflow, TensorBoard and W&B (offline) at once; each is read back.
A failing tracker costs one warning and the others go on."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import imageio.v2 as imageio
import mlflow
import numpy as np
import pytest

from pcm_core.cli import main
from pcm_core.config import TrackingConfig
from pcm_core.errors import ConfigError
from pcm_core.tracking import Tracker

STEPS = 2


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run file: a 7-byte header, then LevelDB-style log records
    (crc32, uint16 length, uint8 type) in 32 KiB blocks; type 1 is a whole record, 2-4 its pieces."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, pieces, records = path.read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pieces += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            records.append(record)
            pieces = b""
    return records


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """A 2-step run, evaluated at steps 0, 1 and 2, logging to all three trackers."""
    tmp = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    main([
        *("--set", f"train.steps={STEPS}", "--set", "train.tasks_per_step=2", "--set", "train.group_size=2"),
        *("--set", "train.eval_episodes=4", "--set", "train.eval_every=1", "--set", "train.sft.demos=4"),
        *("--set", "train.sft.epochs=1", "--set", f"train.sft.cache_dir={tmp / 'cache'}"),
        *("--set", f"train.output_dir={tmp / 'runs'}", "--set", f"tracking.uri={uri}"),
        *("--set", "env.options.max_steps=32", "--set", "pcm.budget=4"),
        *("--set", "tracking.backends=[mlflow,tensorboard,wandb]", "--set", "tracking.log_policy=false"),
    ])
    (run_dir,) = (tmp / "runs").iterdir()
    return uri, run_dir


def test_mlflow_run_has_config_fingerprint_and_videos(tracked_run):
    uri, run_dir = tracked_run
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs(client.get_experiment_by_name("pcm-vla").experiment_id)
    assert run.data.params["env.options.image_size"] == "64"  # the env's validated options, defaults filled in
    assert run.data.tags["pcm.version.torch"].startswith("2.")
    assert run.data.tags["pcm.device"] == "cpu"
    videos = {a.path.split("/")[-1] for a in client.list_artifacts(run.info.run_id, "videos")}
    assert videos == {p.name for p in (run_dir / "videos").iterdir()}
    evals = sorted(v for v in videos if v.startswith("eval_"))
    assert {name[len("eval_step") : len("eval_step") + 6] for name in evals} == {"000000", "000001", "000002"}
    assert sum(name.startswith("eval_step000001") for name in evals) == 2  # tracking.eval_videos per evaluation
    assert sorted(v for v in videos if v.startswith("train_")) == ["train_step000001_kept_chunks.mp4",
                                                                      "train_step000002_kept_chunks.mp4"]
    assert "policy" not in {a.path for a in client.list_artifacts(run.info.run_id)}  # tracking.log_policy=false


def test_videos_decode_with_one_frame_per_chunk(tracked_run):
    _, run_dir = tracked_run
    for path in (run_dir / "videos").iterdir():
        frames = np.stack(list(imageio.get_reader(path).iter_data()))
        assert frames.shape[-1] == 3 and frames.shape[1] % 16 == 0 and frames.shape[2] % 16 == 0
        assert len(frames) == 8  # failures run to the horizon: 32 steps / 4 actions per chunk
        if path.name.startswith("train_"):
            assert frames.shape[1] > 128  # the strip and the legend below the 128-pixel frames


def test_tensorboard_has_every_step_metric(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir = tracked_run
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval_success_rate")] == [0, 1, 2]
    for name in ("success_rate", "kept_chunk_fraction", "keep_prob/phase_1", "time/step_s"):
        assert [e.step for e in events.Scalars(name)] == [1, 2], name
    assert "config/text_summary" in events.Tags()["tensors"]


def test_wandb_offline_run_has_config_history_and_videos(tracked_run):
    _, run_dir = tracked_run
    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(run_file)
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    steps = [row for row in history if "success_rate" in row]
    assert [row["_step"] for row in steps] == [1, 2]
    assert 0.0 <= steps[-1]["kept_chunk_fraction"] <= 1.0
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["pcm.budget"] == "4"
    assert "version.torch" in config["fingerprint"]
    assert any(key.startswith("videos/train_kept_chunks/") for row in history for key in row)


def test_a_failing_tracker_warns_once_and_the_others_go_on(tmp_path):
    logged: list[str] = []
    tracker = Tracker(TrackingConfig(backends=["tensorboard", "wandb"], options={"wandb": {"mode": "disabled"}}),
                      tmp_path, log=logged.append)
    tracker.start({"a": 1})

    def broken(metrics, step):
        raise OSError("disk full\nsecond line")

    tracker.backends["tensorboard"].log_metrics = broken
    tracker.log_metrics({"x": 1.0}, step=1)
    tracker.log_metrics({"x": 2.0}, step=2)
    assert logged == ["warning: tracker tensorboard failed (OSError: disk full); training goes on without it"]
    assert list(tracker.backends) == ["wandb"]
    tracker.end()


@pytest.mark.parametrize(("setting", "message"), [
    ("tracking.backends=[neptune]", "unknown tracker 'neptune'"),
    ("tracking.backends=[mlflow,mlflow]", "names mlflow more than once"),
    ("tracking.options={wandb: {mode: online}}", "tracking.backends does not enable"),
    ("tracking.backends=[wandb]", None),
])
def test_tracker_settings_are_checked_before_a_run(setting, message, capsys):
    from pcm_core.config import load_config, resolve_trackers

    if message is None:
        assert [t.name for t in resolve_trackers(load_config(None, [setting]).tracking)] == ["wandb"]
        return
    with pytest.raises(ConfigError, match=message):
        resolve_trackers(load_config(None, [setting]).tracking)
