"""Inputs as OpenVLA's processor builds them (``prismatic/extern/hf/processing_prismatic.py``).

Images: each featurizer gets the RGB image resized to its ``image_sizes`` entry (bicubic with
antialiasing, ``image_resize_strategy = resize-naive``: no crop, no letterbox; other strategies
are treated the same way here) and normalised with its own mean/std (ImageNet for DINOv2, 0.5 for
SigLIP). Text: ``In: What action should the robot take to {instruction}?\\nOut:`` followed by the
``▁`` token (id 29871 for Llama-2), which ``predict_action`` appends.

Camera frames (``published_image``): the chain the published OpenVLA / OpenVLA-OFT evaluations
put every frame through before the processor, because their training data went through it (the
RLDS dataset builder's JPEG round trip and lanczos3 resize), then the centred crop-and-resize of
checkpoints trained with crop augmentation.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pcm_openvla.vit import ViTSpec

PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
SPACE_TOKEN = "\u2581"


def prompt(instruction: str) -> str:
    """OpenVLA's prompt for one instruction (lower-cased, as the published LIBERO evaluation does)."""
    return PROMPT.format(instruction=instruction.lower().strip().rstrip("."))


def pixel_values(images: Tensor, specs: list[ViTSpec], sizes: list[int], crop_area: float | None = None) -> list[Tensor]:
    """uint8 ``[B, H, W, 3]`` -> one float tensor ``[B, 3, S_k, S_k]`` per featurizer ``k``.

    ``crop_area``: first keep the centred crop with this fraction of the image area (the
    published LIBERO evaluations use 0.9 for checkpoints trained with crop augmentation).
    """
    pixels = images.permute(0, 3, 1, 2).float() / 255.0  # [B, 3, H, W] in [0, 1]
    if crop_area is not None:
        height, width = pixels.shape[-2:]
        crop_h, crop_w = round(height * crop_area**0.5), round(width * crop_area**0.5)
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        pixels = pixels[..., top : top + crop_h, left : left + crop_w]
    out = []
    for spec, size in zip(specs, sizes):
        resized = pixels
        if pixels.shape[-2:] != (size, size):
            resized = F.interpolate(pixels, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
            resized = resized.clamp(0.0, 1.0)
        mean = torch.tensor(spec.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, device=images.device).view(1, 3, 1, 1)
        out.append((resized - mean) / std)
    return out



JPEG_QUALITY = 95  # the RLDS builder's encoder settings (TensorFlow's encode_jpeg): quality 95, 4:2:0 chroma


def jpeg_round_trip(frames: Tensor) -> Tensor:
    """uint8 ``[B, H, W, 3]`` -> the same frames JPEG-encoded and decoded again, as the published
    chain does: encoded at quality 95 with 4:2:0 chroma, decoded with libjpeg's fast integer IDCT
    and fancy upsampling (TensorFlow's ``decode_image`` defaults)."""
    import simplejpeg
    from PIL import Image

    out = []
    for frame in frames.cpu().numpy():
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling="4:2:0")
        out.append(simplejpeg.decode_jpeg(buffer.getvalue(), colorspace="RGB", fastdct=True, fastupsample=False))
    return torch.from_numpy(np.stack(out))


@functools.lru_cache(maxsize=16)
def lanczos3_weights(in_size: int, out_size: int) -> Tensor:
    """``[out_size, in_size]`` float32 resampling matrix of a lanczos3 resize with antialiasing
    (the kernel widened by ``in_size / out_size`` when shrinking), each row normalised to sum 1:
    output pixel ``x`` samples the input at ``(x + 0.5) * in_size / out_size`` (pixel centres)."""
    inv_scale = float(np.float32(in_size) / np.float32(out_size))
    kernel_scale = max(inv_scale, 1.0)
    radius = 3.0 * kernel_scale
    weights = np.zeros((out_size, in_size), dtype=np.float32)
    for x in range(out_size):
        centre = (x + 0.5) * inv_scale  # sample position in input pixels
        start = min(max(math.ceil(centre - radius - 0.5), 0), in_size - 1)
        end = min(max(math.floor(centre + radius - 0.5), 0), in_size - 1) + 1
        distance = np.abs((np.arange(start, end) + 0.5 - centre) / kernel_scale)  # kernel argument
        with np.errstate(divide="ignore", invalid="ignore"):
            lanczos = 3.0 * np.sin(np.pi * distance) * np.sin(np.pi * distance / 3.0) / (np.pi**2 * distance**2)
        lanczos = np.where(distance <= 1e-3, 1.0, np.where(distance > 3.0, 0.0, lanczos))
        weights[x, start:end] = lanczos / lanczos.sum()
    return torch.from_numpy(weights)


def lanczos3_resize(frames: Tensor, size: int) -> Tensor:
    """uint8 ``[B, H, W, 3]`` -> uint8 ``[B, size, size, 3]``: separable lanczos3 with
    antialiasing, rounded half to even and clipped."""
    rows = lanczos3_weights(frames.shape[1], size).to(frames.device)  # [size, H]
    cols = lanczos3_weights(frames.shape[2], size).to(frames.device)  # [size, W]
    resized = rows @ frames.permute(0, 3, 1, 2).float() @ cols.T  # [B, 3, size, size]
    return resized.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8)


def crop_and_resize(frames: Tensor, crop_area: float) -> Tensor:
    """uint8 ``[B, S, S, 3]`` -> uint8 ``[B, S, S, 3]``: the centred crop with ``crop_area`` of
    the area (side ``sqrt(crop_area)``), resized back to ``S`` bilinearly with the crop's corners
    on pixel centres, in float32 on ``[0, 1]``, then back to uint8 as ``trunc(255.5 x)``."""
    size = frames.shape[1]
    side = torch.tensor(min(max(math.sqrt(crop_area), 0.0), 1.0), dtype=torch.float32)
    low = (1.0 - side) / 2.0
    where = low * (size - 1) + torch.arange(size, dtype=torch.float32) * ((side * (size - 1)) / (size - 1))  # [S]
    lower, upper = where.floor().long(), where.ceil().long()
    frac = where - lower  # [S]
    bilinear = torch.zeros(size, size)  # row i: (1 - frac_i) at lower_i, frac_i at upper_i
    bilinear[torch.arange(size), lower] += 1.0 - frac
    bilinear[torch.arange(size), upper] += frac
    bilinear = bilinear.to(frames.device)
    pixels = frames.permute(0, 3, 1, 2).float() * (1.0 / 255.0)  # [B, 3, S, S] in [0, 1]
    out = (bilinear @ pixels @ bilinear.T).clamp(0.0, 1.0)
    return (out * 255.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def published_image(frames: Tensor, size: int = 224, crop_area: float | None = 0.9) -> Tensor:
    """uint8 ``[B, H, W, 3]`` camera frames -> uint8 ``[B, size, size, 3]``: JPEG round trip,
    lanczos3 resize to ``size``, then (``crop_area``) the centred crop resized back to ``size``."""
    images = lanczos3_resize(jpeg_round_trip(frames), size)
    return crop_and_resize(images, crop_area) if crop_area is not None else images


def libero_image(frame: np.ndarray) -> np.ndarray:
    """uint8 ``[256, 256, 3]`` LIBERO frame (already rotated by 180 degrees) -> uint8
    ``[224, 224, 3]``, exactly as the published LIBERO evaluations prepare it (0.9-area crop)."""
    return published_image(torch.from_numpy(np.array(frame, dtype=np.uint8))[None], 224, 0.9)[0].numpy()
