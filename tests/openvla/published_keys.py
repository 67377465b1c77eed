"""State-dict names of OpenVLA, written down from the public sources.

Sources: openvla/openvla ``prismatic/extern/hf/modeling_prismatic.py`` (module tree
``vision_backbone.featurizer`` / ``fused_featurizer`` built by ``timm.create_model`` with LayerScale
``gamma`` renamed to ``scale_factor`` by ``ls_apply_patch``; ``projector.fc1/fc2/fc3`` for the fused
GELU MLP; ``language_model`` = ``AutoModelForCausalLM`` of a Llama config), timm 0.9.x
``vision_transformer.py`` (``cls_token``, ``reg_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.N.{norm1, attn.qkv, attn.proj, ls1, norm2, mlp.fc1, mlp.fc2, ls2}``, ``norm``, SigLIP's
``attn_pool`` MAP head), transformers' ``LlamaForCausalLM`` (``model.embed_tokens``,
``model.layers.N.{self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj, input_layernorm,
post_attention_layernorm}``, ``model.norm``, ``lm_head``), and the ``model.safetensors.index.json``
of openvla/openvla-7b (24 DINOv2 blocks, 27 SigLIP blocks, 32 Llama layers; the same names).
"""

DINO_TOP = ["cls_token", "reg_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
            "norm.weight", "norm.bias"]
SIGLIP_TOP = ["pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias",
              "attn_pool.latent", "attn_pool.q.weight", "attn_pool.q.bias", "attn_pool.kv.weight", "attn_pool.kv.bias",
              "attn_pool.proj.weight", "attn_pool.proj.bias", "attn_pool.norm.weight", "attn_pool.norm.bias",
              "attn_pool.mlp.fc1.weight", "attn_pool.mlp.fc1.bias", "attn_pool.mlp.fc2.weight", "attn_pool.mlp.fc2.bias"]
VIT_BLOCK = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
             "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]
LAYER_SCALE = ["ls1.scale_factor", "ls2.scale_factor"]
PROJECTOR = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
LLAMA_LAYER = ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
               "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
               "input_layernorm.weight", "post_attention_layernorm.weight"]


def published_keys(dino_blocks: int, siglip_blocks: int, llama_layers: int) -> set[str]:
    """Every parameter name of an OpenVLA (dinosiglip + Llama-2) model of the given depths."""
    keys = {f"vision_backbone.featurizer.{k}" for k in DINO_TOP}
    keys |= {f"vision_backbone.featurizer.blocks.{i}.{k}" for i in range(dino_blocks) for k in VIT_BLOCK + LAYER_SCALE}
    keys |= {f"vision_backbone.fused_featurizer.{k}" for k in SIGLIP_TOP}
    keys |= {f"vision_backbone.fused_featurizer.blocks.{i}.{k}" for i in range(siglip_blocks) for k in VIT_BLOCK}
    keys |= {f"projector.{k}" for k in PROJECTOR}
    keys |= {"language_model.model.embed_tokens.weight", "language_model.model.norm.weight",
             "language_model.lm_head.weight"}
    keys |= {f"language_model.model.layers.{i}.{k}" for i in range(llama_layers) for k in LLAMA_LAYER}
    return keys


# OpenVLA-OFT component files (moojink/openvla-oft prismatic/models/projectors.py, action_heads.py)
PROPRIO_PROJECTOR = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
L1_HEAD = {"model.layer_norm1.weight", "model.layer_norm1.bias", "model.fc1.weight", "model.fc1.bias",
           "model.layer_norm2.weight", "model.layer_norm2.bias", "model.fc2.weight", "model.fc2.bias"} | {
    f"model.mlp_resnet_blocks.{i}.ffn.{j}.{p}" for i in range(2) for j in (0, 1) for p in ("weight", "bias")}
