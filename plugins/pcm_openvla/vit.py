"""A plain-torch Vision Transformer whose parameter names are timm's, as OpenVLA saves them.

OpenVLA builds its two featurizers with ``timm.create_model`` (timm 0.9.x) and renames every
``LayerScale.gamma`` to ``scale_factor`` (``prismatic/extern/hf/modeling_prismatic.py``,
``ls_apply_patch``). This module reproduces those names and shapes without timm:

    cls_token [1, 1, D]      (class-token models only)
    reg_token [1, R, D]      (register models only, DINOv2-reg4: R = 4)
    pos_embed [1, N_p, D]    (patches only: ``no_embed_class`` for DINOv2, no class token for SigLIP)
    patch_embed.proj         Conv2d(3, D, p, stride p)
    blocks.i.{norm1, attn.qkv, attn.proj, ls1.scale_factor, norm2, mlp.fc1, mlp.fc2, ls2.scale_factor}
    norm                     final LayerNorm
    attn_pool.{latent, q, kv, proj, norm, mlp.fc1, mlp.fc2}   (SigLIP's MAP head, ``global_pool='map'``)

OpenVLA reads the patch tokens of the *second-to-last* block (``get_intermediate_layers(n={depth - 2})``,
no final norm, prefix tokens dropped), so the last block, ``norm`` and ``attn_pool`` never take part
in a forward pass; they are kept so that published weights load with no unexpected keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ViTSpec:
    """Architecture of one featurizer (what the timm model id fixes).

    Attributes:
        patch_size, embed_dim (D), depth, num_heads, mlp_hidden: the transformer.
        class_token: a ``cls_token`` prefix. reg_tokens: R register tokens (``reg_token``).
        layer_scale: ``ls1``/``ls2`` LayerScale parameters. map_head: SigLIP's ``attn_pool`` head.
        mean, std: per-channel pixel normalisation of the featurizer's image processor.
    """

    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int
    class_token: bool = False
    reg_tokens: int = 0
    layer_scale: bool = False
    map_head: bool = False
    mean: tuple[float, float, float] = SIGLIP_MEAN
    std: tuple[float, float, float] = SIGLIP_STD

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ViTSpec":
        return cls(**{**data, "mean": tuple(data.get("mean", SIGLIP_MEAN)), "std": tuple(data.get("std", SIGLIP_STD))})


DINOV2_L14_REG4 = ViTSpec(14, 1024, 24, 16, 4096, class_token=True, reg_tokens=4, layer_scale=True,
                          mean=IMAGENET_MEAN, std=IMAGENET_STD)
SIGLIP_SO400M_14 = ViTSpec(14, 1152, 27, 16, 4304, map_head=True)  # mlp_ratio 3.7362 -> int(1152 * 3.7362)

TIMM_SPECS: dict[str, ViTSpec] = {
    "vit_large_patch14_reg4_dinov2.lvd142m": DINOV2_L14_REG4,
    "vit_so400m_patch14_siglip_224": SIGLIP_SO400M_14,
    "vit_so400m_patch14_siglip_384": SIGLIP_SO400M_14,
}
"""timm model ids used by OpenVLA's ``dinosiglip`` backbones -> their architecture (timm 0.9.x)."""


class LayerScale(nn.Module):
    """``x * scale_factor`` (timm's ``gamma``, renamed by OpenVLA)."""

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.scale_factor = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale_factor


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (timm layout)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, N, D] -> [B, N, D]``."""
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B, H, N, D/H]
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))``."""

    def __init__(self, spec: ViTSpec) -> None:
        super().__init__()
        dim = spec.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, spec.num_heads)
        self.ls1 = LayerScale(dim) if spec.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, spec.mlp_hidden)
        self.ls2 = LayerScale(dim) if spec.layer_scale else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """``proj``: a stride-``p`` convolution; ``[B, 3, S, S] -> [B, (S/p)^2, D]``."""

    def __init__(self, spec: ViTSpec) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, spec.embed_dim, kernel_size=spec.patch_size, stride=spec.patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class AttentionPoolLatent(nn.Module):
    """SigLIP's multi-head attention pooling head: parameters only.

    OpenVLA uses patch features, never the pooled embedding, so this head is not run; it holds
    ``latent``, ``q``, ``kv``, ``proj``, ``norm`` and ``mlp`` so published weights load one to one.
    """

    def __init__(self, spec: ViTSpec) -> None:
        super().__init__()
        dim = spec.embed_dim
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, spec.mlp_hidden)


class TimmViT(nn.Module):
    """One featurizer: normalised pixels ``[B, 3, S, S]`` -> patch features ``[B, (S/p)^2, D]`` of
    block ``depth - 2`` (OpenVLA's choice), prefix tokens removed."""

    def __init__(self, spec: ViTSpec, image_size: int) -> None:
        super().__init__()
        if image_size % spec.patch_size:
            raise ValueError(f"image size {image_size} is not divisible by the patch size {spec.patch_size}")
        self.spec = spec
        self.image_size = image_size
        self.num_patches = (image_size // spec.patch_size) ** 2
        self.num_prefix_tokens = int(spec.class_token) + spec.reg_tokens
        self.gradient_checkpointing = False
        dim = spec.embed_dim
        self.patch_embed = PatchEmbed(spec)
        if spec.class_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if spec.reg_tokens:
            self.reg_token = nn.Parameter(torch.zeros(1, spec.reg_tokens, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_patches, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        if spec.map_head:
            self.attn_pool = AttentionPoolLatent(spec)

    def forward(self, pixels: Tensor) -> Tensor:
        x = self.patch_embed(pixels) + self.pos_embed  # [B, N_p, D]
        prefix = []
        if self.spec.class_token:
            prefix.append(self.cls_token.expand(x.shape[0], -1, -1))
        if self.spec.reg_tokens:
            prefix.append(self.reg_token.expand(x.shape[0], -1, -1))
        x = torch.cat([*prefix, x], dim=1)  # [B, prefix + N_p, D]
        for block in self.blocks[: self.spec.depth - 1]:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x[:, self.num_prefix_tokens :]
