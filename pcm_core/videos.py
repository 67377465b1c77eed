"""MP4 rollout videos: evaluation episodes, and training rollouts with a strip of PCM's kept chunks.

Frames are the observations at chunk starts (what the policy saw), one video frame per chunk.
The strip under a training rollout has one cell per chunk: its phase's colour, bright when PCM
kept the chunk for backpropagation and dark when it dropped it; a white tick marks the chunk
on screen. A legend row names the phases. Encoded with imageio-ffmpeg (its own ffmpeg binary).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from pcm_core.rollout import GroupSpec
from pcm_core.types import RolloutBatch

PHASE_COLOURS = np.array(
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75], [227, 119, 194],
     [127, 127, 127], [188, 189, 34], [23, 190, 207]],
    dtype=np.uint8,
)
"""Phase k is drawn in colour k mod 10 (matplotlib's tab10, as in the keep-probability plot)."""

DROPPED_BRIGHTNESS = 0.25
STRIP_HEIGHT = 10
TICK_HEIGHT = 3
MIN_SIDE = 128  # frames are upscaled (nearest neighbour) to at least this many pixels
FPS = 4


def write_mp4(frames: np.ndarray, path: Path, fps: int = FPS) -> Path:
    """``frames`` uint8 ``[T, H, W, 3]`` -> an H.264 MP4 (padded to multiples of 16 pixels)."""
    import imageio.v2 as imageio

    height, width = frames.shape[1:3]
    padded = np.zeros((len(frames), -(-height // 16) * 16, -(-width // 16) * 16, 3), dtype=np.uint8)
    padded[:, :height, :width] = frames
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=16, pixelformat="yuv420p",
                            ffmpeg_log_level="error") as writer:
        for frame in padded:
            writer.append_data(frame)
    return path


def upscale(frames: np.ndarray, min_side: int = MIN_SIDE) -> np.ndarray:
    """``[T, H, W, 3]`` repeated by the smallest integer factor that makes the shorter side >= ``min_side``."""
    factor = max(1, -(-min_side // min(frames.shape[1:3])))
    return frames.repeat(factor, axis=1).repeat(factor, axis=2)


def episode_frames(batch: RolloutBatch, i: int) -> np.ndarray:
    """uint8 ``[T_i, H', W', 3]``: the camera frames of trajectory ``i``, upscaled."""
    return upscale(batch.obs["image"][i, : int(batch.lengths[i])].numpy().astype(np.uint8))


def with_kept_strip(frames: np.ndarray, phases: Tensor, keep: Tensor) -> np.ndarray:
    """``frames`` ``[T, H, W, 3]`` of one trajectory with a strip below: chunk ``t`` is cell ``t``, in
    the colour of phase ``phases[t]``, dark where ``keep[t]`` is False, and a tick under the
    current chunk. Returns ``[T, H + STRIP_HEIGHT + TICK_HEIGHT, W, 3]``."""
    steps, height, width = frames.shape[:3]
    edges = np.linspace(0, width, steps + 1).round().astype(int)
    strip = np.zeros((STRIP_HEIGHT, width, 3), dtype=np.uint8)
    for t in range(steps):
        colour = PHASE_COLOURS[int(phases[t]) % len(PHASE_COLOURS)].astype(float)
        if not bool(keep[t]):
            colour = colour * DROPPED_BRIGHTNESS
        strip[1:, edges[t] : max(edges[t + 1] - 1, edges[t] + 1)] = colour.astype(np.uint8)
    out = np.zeros((steps, height + STRIP_HEIGHT + TICK_HEIGHT, width, 3), dtype=np.uint8)
    out[:, :height] = frames
    out[:, height : height + STRIP_HEIGHT] = strip
    for t in range(steps):
        out[t, height + STRIP_HEIGHT :, edges[t] : edges[t + 1]] = 255
    return out


def side_by_side(videos: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Videos ``[T_j, H_j, W_j, 3]`` next to each other; shorter ones hold their last frame."""
    steps, height = max(len(v) for v in videos), max(v.shape[1] for v in videos)
    width = sum(v.shape[2] for v in videos) + gap * (len(videos) - 1)
    out = np.zeros((steps, height, width, 3), dtype=np.uint8)
    left = 0
    for video in videos:
        held = np.concatenate([video, np.repeat(video[-1:], steps - len(video), axis=0)])
        out[:, : video.shape[1], left : left + video.shape[2]] = held
        left += video.shape[2] + gap
    return out


def legend(captions: list[str], names: list[str], width: int) -> np.ndarray:
    """uint8 ``[H, width, 3]``: one line per caption, then a colour swatch and the name of each
    phase, wrapped to ``width``."""
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line, x, rows = 12, 2, len(captions) + 1
    places = []
    for k, name in enumerate(names):
        size = 12 + int(draw.textlength(name)) + 8
        if x + size > width and x > 2:
            x, rows = 2, rows + 1
        places.append((k, name, x, (rows - 1) * line))
        x += size
    image = Image.new("RGB", (width, rows * line + 2))
    draw = ImageDraw.Draw(image)
    for row, caption in enumerate(captions):
        draw.text((2, row * line), caption, fill=(255, 255, 255))
    for k, name, x, y in places:
        draw.rectangle([x, y + 2, x + 8, y + 10], fill=tuple(int(c) for c in PHASE_COLOURS[k % len(PHASE_COLOURS)]))
        draw.text((x + 12, y), name, fill=(255, 255, 255))
    return np.asarray(image)


def eval_videos(batch: RolloutBatch, groups: list[GroupSpec], step: int, folder: Path, count: int) -> list[Path]:
    """Up to ``count`` evaluation episodes as MP4s, successes and failures taken in turn, named
    ``eval_step<step>_task<t>_init<s>_<success|failure>.mp4``."""
    if count == 0 or "image" not in batch.obs:
        return []
    by_outcome = {outcome: [i for i in range(len(groups)) if (batch.rewards[i] > 0) == outcome] for outcome in (True, False)}
    chosen: list[int] = []
    while len(chosen) < count and (by_outcome[True] or by_outcome[False]):
        for outcome in (True, False):
            if by_outcome[outcome] and len(chosen) < count:
                chosen.append(by_outcome[outcome].pop(0))
    paths = []
    for i in chosen:
        outcome = "success" if batch.rewards[i] > 0 else "failure"
        name = f"eval_step{step:06d}_task{groups[i].task_id}_init{groups[i].init_state}_{outcome}.mp4"
        paths.append(write_mp4(episode_frames(batch, i), folder / name))
    return paths


def training_video(
    batch: RolloutBatch, phases: Tensor, keep: Tensor, phase_names: list[str], step: int, folder: Path
) -> Path | None:
    """Two of this step's rollouts side by side, each with its kept-chunk strip, above a caption
    (their outcomes) and the phase legend: ``train_step<step>_kept_chunks.mp4``. A success and a
    failure of one group when some group has both (where PCM's choice matters), else the first
    two trajectories. ``phases`` and ``keep`` are the ``[N, T]`` phase labels and kept chunks of
    ``batch``. None when the batch has no camera."""
    if "image" not in batch.obs:
        return None
    shown = list(range(min(2, batch.num_trajectories)))
    for group in batch.group_index.unique().tolist():
        members = (batch.group_index == group).nonzero().squeeze(1).tolist()
        wins = [i for i in members if batch.rewards[i] > 0]
        losses = [i for i in members if batch.rewards[i] <= 0]
        if wins and losses:
            shown = [wins[0], losses[0]]
            break
    halves = []
    for i in shown:
        length = int(batch.lengths[i])
        halves.append(with_kept_strip(episode_frames(batch, i), phases[i, :length], keep[i, :length]))
    video = side_by_side(halves)
    outcomes = " | ".join("success" if batch.rewards[i] > 0 else "failure" for i in shown)
    key = legend([f"{outcomes}   (bright: kept, dark: dropped)"], phase_names, video.shape[2])
    video = np.concatenate([video, np.repeat(key[None], len(video), axis=0)], axis=1)
    return write_mp4(video, folder / f"train_step{step:06d}_kept_chunks.mp4")
