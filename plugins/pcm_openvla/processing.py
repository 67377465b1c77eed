"""Inputs as OpenVLA's processor builds them (``prismatic/extern/hf/processing_prismatic.py``).

Images: each featurizer gets the RGB image resized to its ``image_sizes`` entry (bicubic with
antialiasing, ``image_resize_strategy = resize-naive``: no crop, no letterbox; other strategies
are treated the same way here) and normalised with its own mean/std (ImageNet for DINOv2, 0.5 for
SigLIP). Text: ``In: What action should the robot take to {instruction}?\\nOut:`` followed by the
``▁`` token (id 29871 for Llama-2), which ``predict_action`` appends.
"""

from __future__ import annotations

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
