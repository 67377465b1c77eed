"""``config.json`` of an OpenVLA checkpoint: the published fields, read and written as a dict.

The fields and their values follow ``prismatic/extern/hf/configuration_prismatic.py`` (OpenVLA)
and the ``config.json`` of ``openvla/openvla-7b`` on the Hugging Face hub: ``vision_backbone_id``,
``llm_backbone_id``, ``arch_specifier``, ``use_fused_vision_backbone``, ``image_resize_strategy``,
``text_config`` (a Llama config), ``llm_max_length``, ``pad_token_id``, ``pad_to_multiple_of``,
``n_action_bins``, ``norm_stats``, ``timm_model_ids``, ``timm_override_act_layers``,
``image_sizes``, ``hf_llm_id``, ``output_projector_states``. A loaded config is kept whole, so a
saved checkpoint carries every field it came with.

Tiny models (tests, CPU runs) add one field of this project, ``pcm_vision_specs``: the featurizer
architectures for timm ids that are not published ones.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

from pcm_openvla.vit import TIMM_SPECS, ViTSpec

DINOSIGLIP_224 = {
    "vision_backbone_id": "dinosiglip-vit-so-224px",
    "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
    "timm_override_act_layers": [None, None],
    "image_sizes": [224, 224],
    "use_fused_vision_backbone": True,
}

LLAMA2_7B_TEXT_CONFIG: dict[str, Any] = {
    "model_type": "llama",
    "vocab_size": 32064,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "pad_token_id": 32000,
    "torch_dtype": "bfloat16",
}
"""``text_config`` of ``openvla/openvla-7b`` (Llama-2 7B with the vocabulary padded to 32064)."""


def published_config(norm_stats: dict | None = None, text_config: dict | None = None, **overrides: Any) -> dict:
    """A ``config.json`` dict with the fields and values of ``openvla/openvla-7b``."""
    config: dict[str, Any] = {
        "architectures": ["OpenVLAForActionPrediction"],
        "auto_map": {
            "AutoConfig": "configuration_prismatic.OpenVLAConfig",
            "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction",
        },
        "model_type": "openvla",
        "arch_specifier": "no-align+fused-gelu-mlp",
        "llm_backbone_id": "llama2-7b-pure",
        "hf_llm_id": "meta-llama/Llama-2-7b-hf",
        "llm_max_length": 2048,
        "image_resize_strategy": "resize-naive",
        "n_action_bins": 256,
        "norm_stats": norm_stats or {},
        "output_projector_states": False,
        "pad_to_multiple_of": 64,
        "pad_token_id": 32000,
        "text_config": dict(text_config or LLAMA2_7B_TEXT_CONFIG),
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.1",
        **DINOSIGLIP_224,
    }
    config.update(overrides)
    return config


@dataclass
class PrismaticConfig:
    """The architecture read from a ``config.json`` dict (``raw`` keeps every field for saving)."""

    raw: dict[str, Any]
    processor: dict[str, Any] | None = None
    """``preprocessor_config.json`` of the checkpoint, whose ``means``/``stds`` win when present."""

    def __post_init__(self) -> None:
        missing = [key for key in ("text_config", "timm_model_ids", "image_sizes", "use_fused_vision_backbone")
                   if key not in self.raw]
        if missing:
            raise KeyError(", ".join(missing))

    @property
    def use_fused_vision_backbone(self) -> bool:
        return bool(self.raw["use_fused_vision_backbone"])

    @property
    def image_sizes(self) -> list[int]:
        return [int(size) for size in self.raw["image_sizes"]]

    @property
    def vision_specs(self) -> list[ViTSpec]:
        """One spec per featurizer (``featurizer``, then ``fused_featurizer``)."""
        count = 2 if self.use_fused_vision_backbone else 1
        custom = self.raw.get("pcm_vision_specs")
        if custom is not None:
            specs = [ViTSpec.from_dict(spec) for spec in custom[:count]]
        else:
            specs = []
            for model_id in self.raw["timm_model_ids"][:count]:
                if model_id not in TIMM_SPECS:
                    raise ValueError(f"unsupported timm model id '{model_id}' (known: {', '.join(TIMM_SPECS)})")
                specs.append(TIMM_SPECS[model_id])
        means, stds = (self.processor or {}).get("means"), (self.processor or {}).get("stds")
        if means and stds and len(means) >= count and len(stds) >= count:
            specs = [replace(spec, mean=tuple(m), std=tuple(s)) for spec, m, s in zip(specs, means, stds)]
        return specs

    @property
    def text_config(self) -> dict[str, Any]:
        return dict(self.raw["text_config"])

    @property
    def pad_to_multiple_of(self) -> int:
        return int(self.raw.get("pad_to_multiple_of", 0))

    @property
    def action_vocab_end(self) -> int:
        """OpenVLA's ``vocab_size`` for de-tokenisation: the padded LM vocabulary minus the padding.
        Action tokens are the ``n_action_bins`` ids just below it."""
        return int(self.raw["text_config"]["vocab_size"]) - self.pad_to_multiple_of

    @property
    def n_action_bins(self) -> int:
        return int(self.raw.get("n_action_bins", 256))

    @property
    def norm_stats(self) -> dict[str, Any]:
        return self.raw.get("norm_stats") or {}

    def with_norm_stats(self, norm_stats: dict[str, Any]) -> "PrismaticConfig":
        raw = copy.deepcopy(self.raw)
        raw["norm_stats"] = norm_stats
        return PrismaticConfig(raw, self.processor)
