"""Write the golden data of ``test_libero_image.py`` (run by hand; the test only reads it).

1. ``frames`` (needs the [libero] extra, ``MUJOCO_GL=egl``): the first frame after the settle
   steps of task 0, initial state 0, of libero_spatial, libero_object and libero_goal, agent view
   and wrist, exactly as ``pcm_libero`` gives them (256 x 256, rotated by 180 degrees), as PNGs.
2. ``official`` (needs ``pip install tensorflow-cpu pillow``): each frame through the published
   evaluation's TensorFlow chain — ``tf.image.encode_jpeg`` / ``decode_image``,
   ``tf.image.resize(224, lanczos3, antialias=True)``, round and clip, then the 0.9-area centred
   ``tf.image.crop_and_resize`` in float32 on [0, 1] and ``convert_image_dtype(uint8, saturate=True)``
   — written beside it as ``<name>_official.png``.

    python tests/openvla/make_libero_image_golden.py frames
    python tests/openvla/make_libero_image_golden.py official
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).parent / "data" / "libero_image"
SUITES = ["libero_spatial", "libero_object", "libero_goal"]
CAMERAS = {"image": "agentview", "wrist_image": "wrist"}


def frames() -> None:
    from pcm_libero.env import LiberoEnv, LiberoOptions

    DATA.mkdir(parents=True, exist_ok=True)
    for suite in SUITES:
        env = LiberoEnv(LiberoOptions(suite=suite, wrist_image=True), num_envs=1)
        obs, _ = env.reset([0], [0])
        for key, camera in CAMERAS.items():
            Image.fromarray(obs[key][0]).save(DATA / f"{suite}_{camera}.png")
        env.close()


def official() -> None:
    import tensorflow as tf

    for path in sorted(DATA.glob("*_agentview.png")) + sorted(DATA.glob("*_wrist.png")):
        frame = np.asarray(Image.open(path).convert("RGB"))
        image = tf.io.decode_image(tf.image.encode_jpeg(frame), expand_animations=False, dtype=tf.uint8)
        image = tf.image.resize(image, (224, 224), method="lanczos3", antialias=True)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        image = tf.image.convert_image_dtype(image, tf.float32)[None]  # [1, 224, 224, 3] in [0, 1]
        side = tf.reshape(tf.clip_by_value(tf.sqrt(0.9), 0, 1), (1,))
        low = (1 - side) / 2
        boxes = tf.stack([low, low, low + side, low + side], axis=1)
        image = tf.image.crop_and_resize(image, boxes, tf.range(1), (224, 224))[0]
        image = tf.image.convert_image_dtype(tf.clip_by_value(image, 0, 1), tf.uint8, saturate=True)
        Image.fromarray(image.numpy()).save(path.with_name(f"{path.stem}_official.png"))


if __name__ == "__main__":
    {"frames": frames, "official": official}[sys.argv[1]]()
