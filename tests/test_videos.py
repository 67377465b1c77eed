"""Rollout videos: the kept-chunk strip pixel by pixel, episode choice and names, MP4 round trip."""

from __future__ import annotations

import imageio.v2 as imageio
import numpy as np
import torch

from pcm_core.rollout import GroupSpec
from pcm_core.types import RolloutBatch
from pcm_core.videos import (
    DROPPED_BRIGHTNESS, PHASE_COLOURS, STRIP_HEIGHT, TICK_HEIGHT, eval_videos, training_video, with_kept_strip, write_mp4,
)


def decode(path) -> np.ndarray:
    """Every frame of an MP4, ``[T, H, W, 3]``."""
    return np.stack(list(imageio.get_reader(path).iter_data()))


def batch_of(rewards: list[float], lengths: list[int], groups: list[int], size: int = 16) -> RolloutBatch:
    n, t = len(rewards), max(lengths)
    images = torch.arange(n * t, dtype=torch.uint8).view(n, t, 1, 1, 1).expand(n, t, size, size, 3).contiguous()
    return RolloutBatch(
        obs={"image": images}, instructions=["pick"] * n, actions=torch.zeros(n, t, 1, 7),
        tokens=torch.zeros(n, t, 7, dtype=torch.long), old_logprobs=torch.zeros(n, t, 7), entropy=torch.zeros(n, t),
        lengths=torch.tensor(lengths), rewards=torch.tensor(rewards), group_index=torch.tensor(groups),
    )


def test_strip_colours_each_chunk_by_phase_and_darkens_dropped_ones():
    frames = np.full((4, 8, 8, 3), 50, dtype=np.uint8)
    phases, keep = torch.tensor([0, 1, 1, 3]), torch.tensor([True, False, True, False])
    out = with_kept_strip(frames, phases, keep)
    assert out.shape == (4, 8 + STRIP_HEIGHT + TICK_HEIGHT, 8, 3)
    assert (out[:, :8] == 50).all()  # the camera frame is untouched
    strip_row = out[0, 8 + 1]  # cells of 2 pixels; the last pixel of each cell is a black gap
    assert (strip_row[0] == PHASE_COLOURS[0]).all()
    assert (strip_row[2] == (PHASE_COLOURS[1] * DROPPED_BRIGHTNESS).astype(np.uint8)).all()
    assert (strip_row[4] == PHASE_COLOURS[1]).all()
    assert (strip_row[6] == (PHASE_COLOURS[3] * DROPPED_BRIGHTNESS).astype(np.uint8)).all()
    ticks = out[:, 8 + STRIP_HEIGHT :, :, 0]  # [T, tick rows, W]
    for t in range(4):
        assert (ticks[t, :, 2 * t : 2 * t + 2] == 255).all() and ticks[t].sum() == 255 * TICK_HEIGHT * 2


def test_mp4_round_trip_keeps_frames_and_pads_to_16_pixels(tmp_path):
    frames = np.zeros((5, 20, 30, 3), dtype=np.uint8)
    frames[:, :, :, 1] = np.arange(5)[:, None, None] * 50  # a brighter green each frame
    decoded = decode(write_mp4(frames, tmp_path / "v.mp4"))
    assert decoded.shape == (5, 32, 32, 3)
    assert np.abs(decoded[:, 4:16, 4:26, 1].astype(int).mean(axis=(1, 2)) - np.arange(5) * 50).max() < 8


def test_eval_videos_alternate_successes_and_failures_named_by_task_state_and_outcome(tmp_path):
    batch = batch_of([0, 0, 1, 1, 0], [3, 2, 4, 1, 2], [0, 1, 2, 3, 4])
    groups = [GroupSpec(i % 2, 100 + i) for i in range(5)]
    paths = eval_videos(batch, groups, step=7, folder=tmp_path, count=3)
    assert [p.name for p in paths] == [
        "eval_step000007_task0_init102_success.mp4",
        "eval_step000007_task0_init100_failure.mp4",
        "eval_step000007_task1_init103_success.mp4",
    ]
    assert [len(decode(p)) for p in paths] == [4, 3, 1]  # one frame per chunk
    assert eval_videos(batch, groups, step=7, folder=tmp_path, count=0) == []


def test_training_video_shows_a_success_and_a_failure_of_a_mixed_group(tmp_path):
    batch = batch_of([1, 1, 1, 0], [2, 3, 5, 4], [0, 0, 1, 1])  # group 0 all successes, group 1 mixed
    phases = torch.zeros(4, 5, dtype=torch.long)
    keep = torch.ones(4, 5, dtype=torch.bool)
    path = training_video(batch, phases, keep, ["approach"], step=3, folder=tmp_path)
    assert path.name == "train_step000003_kept_chunks.mp4"
    frames = decode(path)
    assert len(frames) == 5  # the longer of trajectories 2 and 3
    # images are 16 px, upscaled x8 to 128; two side by side with a 4 px gap -> 260 wide, padded to 272
    assert frames.shape[2] == 272
    # the left half shows trajectory 2 (its frames hold the value 2 * 5 + t)
    assert abs(int(frames[1, 40:80, 40:80].mean()) - (2 * 5 + 1)) <= 3


def test_keep_probability_legend_names_the_phases(tmp_path):
    from pcm_core.plots import keep_probability_labels, plot_keep_probabilities

    history = [{"step": 0, "eval_success_rate": 0.2}] + [
        {"step": s, "keep_prob/phase_0": 0.1, "keep_prob/phase_10": 0.3, "keep_prob/phase_2": 0.6} for s in (1, 2)
    ]
    assert keep_probability_labels(history, ["approach", "align + grasp", "transport + place"]) == {
        "keep_prob/phase_0": "phase 0: approach", "keep_prob/phase_2": "phase 2: transport + place", "keep_prob/phase_10": "phase 10",
    }
    assert plot_keep_probabilities(history, tmp_path / "q.png", ["approach"]).stat().st_size > 0
