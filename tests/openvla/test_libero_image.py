"""The published image chain against golden outputs of the official TensorFlow code, on real
LIBERO frames (``make_libero_image_golden.py`` wrote both; see its docstring)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.openvla

DATA = Path(__file__).parent / "data" / "libero_image"
FRAMES = sorted(p for p in DATA.glob("*.png") if not p.stem.endswith("_official"))


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def test_golden_data_covers_three_suites_and_both_cameras():
    assert [p.stem for p in FRAMES] == [f"{suite}_{camera}" for suite in ("libero_goal", "libero_object", "libero_spatial")
                                        for camera in ("agentview", "wrist")]


@pytest.mark.parametrize("frame", FRAMES, ids=[p.stem for p in FRAMES])
def test_libero_image_matches_the_official_tensorflow_chain(frame):
    from pcm_openvla.processing import libero_image

    ours = libero_image(_png(frame))
    official = _png(frame.with_name(f"{frame.stem}_official.png"))
    assert ours.shape == official.shape == (224, 224, 3) and ours.dtype == np.uint8
    difference = np.abs(ours.astype(int) - official.astype(int))
    assert difference.mean() <= 1.5 and np.percentile(difference, 99) <= 8  # the acceptance bounds
    assert difference.max() <= 1 and (difference == 0).mean() > 0.999  # measured: float rounding only


@pytest.mark.parametrize("frame", FRAMES[:2], ids=[p.stem for p in FRAMES[:2]])
def test_the_direct_chain_is_measurably_off_the_official_one(frame):
    """What ``image_chain=direct`` (crop from the frame, one bicubic resize) costs, as docs/libero.md says."""
    from pcm_openvla.processing import pixel_values
    from pcm_openvla.vit import ViTSpec

    identity = ViTSpec(3, 8, 1, 1, 8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    (direct,) = pixel_values(torch.from_numpy(_png(frame).copy())[None], [identity], [224], crop_area=0.9)
    ours = (direct[0].permute(1, 2, 0) * 255).round().numpy()
    official = _png(frame.with_name(f"{frame.stem}_official.png")).astype(float)
    assert 2.0 < np.abs(ours - official).mean() < 6.0


def test_lanczos_weights_and_crop_by_hand():
    from pcm_openvla.processing import crop_and_resize, lanczos3_weights

    weights = lanczos3_weights(256, 224)
    assert weights.shape == (224, 256)
    torch.testing.assert_close(weights.sum(1), torch.ones(224))
    torch.testing.assert_close(lanczos3_weights(4, 4), torch.eye(4), rtol=0, atol=1e-7)  # same size: each pixel itself
    flat = torch.full((1, 8, 8, 3), 200, dtype=torch.uint8)
    assert torch.equal(crop_and_resize(flat, 0.9), torch.full((1, 8, 8, 3), 200, dtype=torch.uint8))  # trunc(255.5 * 200/255) = 200
    ramp = torch.arange(8, dtype=torch.uint8).mul(30).reshape(1, 1, 8, 1).expand(1, 8, 8, 3)
    cropped = crop_and_resize(ramp, 0.25)[0, 0, :, 0]  # side 0.5: columns 1.75 .. 5.25, a linear ramp
    expected = torch.trunc((1.75 + torch.arange(8) * 0.5) * 30 / 255 * 255.5)
    assert torch.equal(cropped.float(), expected)


def test_the_policy_puts_frames_through_the_published_chain(tiny_folder, obs):
    from pcm_openvla.policy import OpenVLAPolicy
    from pcm_openvla.processing import pixel_values, published_image

    policy = OpenVLAPolicy(OpenVLAPolicy.Options(path=tiny_folder, center_crop=0.9))
    specs, sizes = policy.config.vision_specs, policy.config.image_sizes
    published = policy.pixels(obs["image"])  # one tensor per featurizer (DINOv2 + SigLIP)
    for ours, expected in zip(published, pixel_values(published_image(obs["image"], sizes[0], 0.9), specs, sizes)):
        torch.testing.assert_close(ours, expected)
    direct = OpenVLAPolicy(OpenVLAPolicy.Options(path=tiny_folder, center_crop=0.9, image_chain="direct"))
    for ours, expected in zip(direct.pixels(obs["image"]), pixel_values(obs["image"], specs, sizes, 0.9)):
        torch.testing.assert_close(ours, expected)
    assert not torch.equal(published[0], direct.pixels(obs["image"])[0])
