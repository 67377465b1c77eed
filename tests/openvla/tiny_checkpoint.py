"""Tiny OpenVLA checkpoints in the published layout, built and saved by the tests themselves."""

from __future__ import annotations

import torch

from pcm_openvla.policy import OpenVLAOFTPolicy

NORM_STATS = {
    "tabletop": {
        "action": {
            "q01": [-0.5, -0.5, -0.5, -1.0, -1.0, -1.0, 0.0],
            "q99": [1.5, 1.5, 1.5, 1.0, 1.0, 1.0, 1.0],
            "mask": [True, True, True, True, True, True, False],
        },
        "proprio": {"q01": [-1.0] * 8, "q99": [1.0] * 8},
    },
    "other": {"action": {"q01": [0.0] * 7, "q99": [1.0] * 7}},
}
"""Hand-made dataset statistics of two datasets (so ``unnorm_key`` must choose)."""


def make_folder(path, shard_mb: float = 0.1) -> str:
    """Save a tiny random OpenVLA-OFT model (one camera, with proprio projector) to ``path`` as several shards."""
    policy = OpenVLAOFTPolicy(OpenVLAOFTPolicy.Options(chunk_size=2, max_shard_size_mb=shard_mb, seed=3, image_keys=["image"]))
    policy.config = policy.config.with_norm_stats(NORM_STATS)
    with torch.no_grad():  # a random projector and LayerScale far from zero: every part affects the logits
        for name, parameter in policy.module.named_parameters():
            if name.endswith("scale_factor"):
                parameter.fill_(0.5)
    policy.save(str(path))
    return str(path)


INSTRUCTIONS = ["pick up the red cube", "open the top drawer and put the bowl in it", "stack"]
