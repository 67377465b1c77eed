"""The Prismatic VLA network with OpenVLA's module tree and parameter names.

    vision_backbone.featurizer.*        DINOv2 ViT-L/14-reg4 (timm names, see :mod:`pcm_openvla.vit`)
    vision_backbone.fused_featurizer.*  SigLIP ViT-SO400M/14
    projector.fc1, fc2, fc3             fused GELU MLP (fc1, fc2 without a fused backbone)
    language_model.model.*              ``transformers`` LlamaForCausalLM
    language_model.lm_head.weight

OpenVLA-OFT keeps the same tree and stores its extra modules in separate files: the
:class:`ProprioProjector` (``fc1``, ``fc2``) and the :class:`L1RegressionActionHead`
(``model.layer_norm1``, ``model.fc1``, ``model.mlp_resnet_blocks.i.ffn.{0,1}``, ``model.layer_norm2``,
``model.fc2``), from ``prismatic/models/projectors.py`` and ``prismatic/models/action_heads.py``.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaForCausalLM

from pcm_openvla.configuration import PrismaticConfig
from pcm_openvla.vit import TimmViT


CACHE_ARGUMENT = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"
"""Name of the KV-cache argument (and output field) of ``LlamaForCausalLM.forward``."""


class PrismaticVisionBackbone(nn.Module):
    """``featurizer`` (+ ``fused_featurizer``): per-featurizer pixels -> channel-concatenated patches."""

    def __init__(self, config: PrismaticConfig) -> None:
        super().__init__()
        specs, sizes = config.vision_specs, config.image_sizes
        self.featurizer = TimmViT(specs[0], sizes[0])
        self.embed_dim = specs[0].embed_dim
        if config.use_fused_vision_backbone:
            self.fused_featurizer = TimmViT(specs[1], sizes[1])
            self.embed_dim += specs[1].embed_dim

    @property
    def featurizers(self) -> list[TimmViT]:
        return [self.featurizer, self.fused_featurizer] if hasattr(self, "fused_featurizer") else [self.featurizer]

    def forward(self, pixels: list[Tensor]) -> Tensor:
        """``pixels[k]`` ``[B, 3, S_k, S_k]`` normalised for featurizer k -> ``[B, N_p, sum_k D_k]``."""
        return torch.cat([net(p) for net, p in zip(self.featurizers, pixels)], dim=2)


class PrismaticProjector(nn.Module):
    """Vision features -> LLM embeddings: fc1 -> GELU -> fc2 (-> GELU -> fc3 when fused)."""

    def __init__(self, fused: bool, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fused = fused
        if fused:
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
            self.act_fn2 = nn.GELU()
        else:
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act_fn1 = nn.GELU()

    def forward(self, patches: Tensor) -> Tensor:
        """``[B, N, vision_dim] -> [B, N, llm_dim]``."""
        x = self.fc2(self.act_fn1(self.fc1(patches)))
        return self.fc3(self.act_fn2(x)) if self.fused else x


class PrismaticVLA(nn.Module):
    """Vision backbone + projector + Llama; :meth:`run` scores a prepared embedding sequence."""

    def __init__(self, config: PrismaticConfig) -> None:
        super().__init__()
        self.config = config
        self.vision_backbone = PrismaticVisionBackbone(config)
        text = LlamaConfig(**{k: v for k, v in config.text_config.items() if k != "model_type"})
        text._attn_implementation = "sdpa"
        text.use_cache = False
        self.projector = PrismaticProjector(config.use_fused_vision_backbone, self.vision_backbone.embed_dim,
                                            text.hidden_size)
        self.language_model = LlamaForCausalLM(text)

    def image_tokens(self, pixels: list[Tensor], num_images: int) -> Tensor:
        """``pixels[k]`` ``[B * n, 3, S_k, S_k]`` (image-major per sample) -> ``[B, n * N_p, hidden]``."""
        tokens = self.projector(self.vision_backbone(pixels))  # [B * n, N_p, h]
        return tokens.reshape(-1, num_images * tokens.shape[1], tokens.shape[2])

    def embed_ids(self, input_ids: Tensor) -> Tensor:
        """``[B, T]`` ids -> ``[B, T, hidden]`` LLM input embeddings."""
        return self.language_model.get_input_embeddings()(input_ids)

    def run(
        self, embeds: Tensor, mask: Tensor, bidirectional: bool, keep_last: int
    ) -> tuple[Tensor, Tensor]:
        """Logits ``[B, keep_last, V]`` and final hidden states ``[B, keep_last, h]`` of the last
        ``keep_last`` positions of ``embeds`` ``[B, N, h]``.

        ``mask`` ``[B, N]`` bool marks real positions; padding may sit anywhere (positions are
        counted over real tokens only, so a padded sequence scores exactly like the unpadded one).
        Causal attention is OpenVLA's; ``bidirectional`` is OpenVLA-OFT's parallel decoding.
        """
        positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)  # [B, N]
        allowed = mask[:, None, None, :].expand(-1, 1, mask.shape[1], -1)  # [B, 1, N, N] key j is real
        if not bidirectional:
            causal = torch.ones(mask.shape[1], mask.shape[1], dtype=torch.bool, device=mask.device).tril()
            allowed = allowed & causal
        out = self.language_model(inputs_embeds=embeds, attention_mask=allowed, position_ids=positions,
                                  logits_to_keep=keep_last, use_cache=False, output_hidden_states=True)
        return out.logits, out.hidden_states[-1][:, -keep_last:]


    def generate(self, embeds: Tensor, mask: Tensor, steps: int, pick: Callable[[Tensor], Tensor]) -> Tensor:
        """Causal decoding of ``steps`` tokens after ``embeds`` ``[B, N, h]`` with a KV cache.

        ``pick`` maps the logits ``[B, V]`` of the next position to token ids ``[B]``; returns the
        ids ``[B, steps]``. Scores exactly like :meth:`run` on the teacher-forced sequence.
        """
        length = mask.shape[1]
        positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)  # [B, N]
        causal = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
        out = self.language_model(inputs_embeds=embeds, attention_mask=mask[:, None, None, :] & causal,
                                  position_ids=positions, use_cache=True, logits_to_keep=1)
        position, ids = positions[:, -1:], []
        for step in range(steps):
            ids.append(pick(out.logits[:, -1]))
            if step == steps - 1:
                break
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            position = position + 1
            cache = {CACHE_ARGUMENT: getattr(out, CACHE_ARGUMENT)}  # transformers >= 5.24 calls it `cache`
            out = self.language_model(inputs_embeds=self.embed_ids(ids[-1][:, None]), attention_mask=mask[:, None, None, :],
                                      position_ids=position, use_cache=True, **cache)
        return torch.stack(ids, dim=1)


class ProprioProjector(nn.Module):
    """OpenVLA-OFT's proprio token: fc1 -> GELU -> fc2, ``[B, proprio_dim] -> [B, hidden]``."""

    def __init__(self, llm_dim: int, proprio_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act_fn1 = nn.GELU()

    @property
    def proprio_dim(self) -> int:
        return self.fc1.in_features

    def forward(self, proprio: Tensor) -> Tensor:
        return self.fc2(self.act_fn1(self.fc1(proprio)))


class MLPResNetBlock(nn.Module):
    """``x + ReLU(Linear(LayerNorm(x)))`` with the layers in ``ffn`` (indices 0, 1, 2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    """LayerNorm -> fc1 -> ReLU -> residual blocks -> LayerNorm -> fc2."""

    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList(MLPResNetBlock(hidden_dim) for _ in range(num_blocks))
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1RegressionActionHead(nn.Module):
    """OpenVLA-OFT's continuous head: the hidden states of one action's D tokens -> D numbers."""

    def __init__(self, llm_dim: int, action_dim: int) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.model = MLPResNet(2, llm_dim * action_dim, llm_dim, action_dim)

    def forward(self, hidden: Tensor, chunk_size: int) -> Tensor:
        """``[B, K * D, h]`` action-position hidden states -> ``[B, K, D]`` normalised actions."""
        return self.model(hidden.reshape(hidden.shape[0], chunk_size, -1))
