"""Building an OpenVLA model: from a checkpoint folder / hub id, or randomly initialised."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pcm_openvla import checkpoint
from pcm_openvla.action_tokens import ActionTokenizer
from pcm_openvla.checkpoint import CheckpointFolderError
from pcm_openvla.configuration import LLAMA2_7B_TEXT_CONFIG, PrismaticConfig, published_config
from pcm_openvla.vit import IMAGENET_MEAN, IMAGENET_STD, ViTSpec


@dataclass
class Loaded:
    """A built model with its config, tokenizer, source folder and OFT component state dicts."""

    config: PrismaticConfig
    model: nn.Module
    tokenizer: Any
    folder: Path | None = None
    components: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    component_steps: dict[str, int] = field(default_factory=dict)


def tiny_config(norm_stats: dict | None = None, image_size: int = 28, hidden_size: int = 32, layers: int = 2,
                vocab_size: int = 320) -> dict:
    """A ``config.json`` with the published fields and tiny shapes: two 2-block ViTs (DINOv2-like with
    class + 4 register tokens and LayerScale, SigLIP-like with the MAP head), patch 14, a
    ``layers``-layer Llama of width ``hidden_size`` and a vocabulary of ``vocab_size`` + 64 padding."""
    specs = [
        ViTSpec(14, 16, 2, 2, 32, class_token=True, reg_tokens=4, layer_scale=True, mean=IMAGENET_MEAN, std=IMAGENET_STD),
        ViTSpec(14, 24, 2, 2, 40, map_head=True),
    ]
    text = {**LLAMA2_7B_TEXT_CONFIG, "vocab_size": vocab_size + 64, "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size, "num_hidden_layers": layers, "num_attention_heads": 4,
            "num_key_value_heads": 4, "max_position_embeddings": 512, "pad_token_id": vocab_size,
            "torch_dtype": "float32"}
    return published_config(
        norm_stats, text, image_sizes=[image_size, image_size], pad_token_id=vocab_size,
        timm_model_ids=["pcm-tiny-dinov2", "pcm-tiny-siglip"], pcm_vision_specs=[s.to_dict() for s in specs],
    )


def random(options: Any) -> Loaded:
    """A randomly initialised model of ``options.architecture`` with a built tokenizer."""
    from pcm_openvla.modeling import PrismaticVLA
    from pcm_openvla.tokenizer import build_tokenizer

    raw = tiny_config() if options.architecture == "tiny" else published_config()
    config = PrismaticConfig(raw)
    with torch.random.fork_rng(devices=[]), torch.device(options.init_device):
        torch.manual_seed(options.seed)
        model = PrismaticVLA(config)
    return Loaded(config, model, build_tokenizer(config.action_vocab_end, config.n_action_bins))


def load(options: Any) -> Loaded:
    """The checkpoint at ``options.path`` (folder or hub id); every parameter must match by name."""
    from transformers import AutoTokenizer

    from pcm_openvla.modeling import PrismaticVLA

    folder = checkpoint.resolve(options.path)
    raw = checkpoint.read_config(folder)
    try:
        config = PrismaticConfig(raw, checkpoint.read_processor(folder))
        config.vision_specs  # noqa: B018 -- raises for timm ids this project does not know
    except (KeyError, ValueError) as exc:
        raise CheckpointFolderError(
            f"'{folder}/config.json' is not an OpenVLA config ({exc}).\n"
            "Fix: use the config.json published with the checkpoint (vision_backbone_id, timm_model_ids, text_config, ...)"
        ) from None
    state = checkpoint.load_weights(folder)
    with torch.device("meta"):
        model = PrismaticVLA(config)
    checkpoint.check_keys(set(model.state_dict()), set(state), folder)
    model.load_state_dict(state, assign=True, strict=True)
    _rebuild_rotary(model)
    model.to(options.init_device)
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # AutoTokenizer reads config.json and warns that "openvla" is unknown to it
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise CheckpointFolderError(
            f"'{folder}' has no usable tokenizer files ({type(exc).__name__}).\n"
            "Fix: copy tokenizer.json / tokenizer.model and tokenizer_config.json of the checkpoint into the folder"
        ) from None
    finally:
        logging.set_verbosity(verbosity)
    loaded = Loaded(config, model, tokenizer, folder)
    for name in ("proprio_projector", "action_head"):
        file = checkpoint.component_file(folder, name)
        if file is not None:
            loaded.components[name] = checkpoint.load_component(file)
            loaded.component_steps[name] = int(re.sub(r"\D", "", file.name.split("--")[1]) or 0)
    return loaded


def _rebuild_rotary(model: nn.Module) -> None:
    """Recreate Llama's rotary embedding, whose buffers are not in the state dict (built on meta)."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    llama = model.language_model.model
    llama.rotary_emb = LlamaRotaryEmbedding(config=llama.config)


def action_tokenizer(config: PrismaticConfig) -> ActionTokenizer:
    return ActionTokenizer(config.action_vocab_end, config.n_action_bins)


def dataset_stats(config: PrismaticConfig, unnorm_key: str | None) -> dict | None:
    """``norm_stats[unnorm_key]`` (the only dataset when the key is None), or None if undecidable.
    A key missing as given falls back to ``<key>_no_noops``, as the published LIBERO evaluation
    does (its fine-tunes were trained on the no-noop versions of the suites)."""
    stats = config.norm_stats
    if unnorm_key is None:
        return next(iter(stats.values())) if len(stats) == 1 else None
    if unnorm_key not in stats and f"{unnorm_key}_no_noops" in stats:
        unnorm_key = f"{unnorm_key}_no_noops"
    if unnorm_key not in stats:
        shown = ", ".join(sorted(stats)[:8]) + (", ..." if len(stats) > 8 else "")
        raise CheckpointFolderError(
            f"unnorm_key '{unnorm_key}' is not in the checkpoint's dataset statistics (has: {shown or 'none'}).\n"
            "Fix: set policy.options.unnorm_key to one of them"
        )
    return stats[unnorm_key]


def action_stats(config: PrismaticConfig, unnorm_key: str | None, required: bool) -> dict | None:
    """The ``action`` statistics used to un-normalise, checked when ``required``."""
    stats = dataset_stats(config, unnorm_key)
    if stats is None:
        if required:
            raise CheckpointFolderError(
                f"the checkpoint has statistics of {len(config.norm_stats)} datasets and no unnorm_key was given.\n"
                f"Fix: set policy.options.unnorm_key to one of {', '.join(sorted(config.norm_stats)) or '(none)'}"
            )
        return None
    return stats["action"]


IMAGE_COUNT_FIELD = "num_images_in_input"
"""``config.json`` field in which this project's saved checkpoints record the cameras they read."""


def check_image_count(loaded: Loaded, image_keys: list[str]) -> None:
    """A checkpoint that records its camera count (one saved by this project) must get that many images."""
    saved = loaded.config.raw.get(IMAGE_COUNT_FIELD)
    if loaded.folder is not None and saved is not None and saved != len(image_keys):
        raise CheckpointFolderError(
            f"'{loaded.folder}' was trained on {saved} image(s) per observation, policy.options.image_keys = "
            f"{image_keys} gives {len(image_keys)}.\n"
            f"Fix: set policy.options.image_keys to {saved} camera(s), e.g. "
            f"{'[image, wrist_image] (LIBERO: with env.options.wrist_image=true)' if saved == 2 else '[image]'}"
        )


def check_proprio_projector(loaded: Loaded, proprio_key: str | None) -> None:
    """A loaded checkpoint reads the proprio exactly when it has a projector for it: no randomly
    initialised projector's token inserted into a trained model, no trained projector left unused."""
    if loaded.folder is None:
        return
    has_projector = "proprio_projector" in loaded.components
    if proprio_key is not None and not has_projector:
        raise CheckpointFolderError(
            f"'{loaded.folder}' has no proprio_projector--<step>_checkpoint.pt, so policy.options.proprio_key = "
            f"'{proprio_key}' would feed the proprio through a randomly initialised projector.\n"
            "Fix: set policy.options.proprio_key=null for a checkpoint trained without proprio, "
            "or copy the checkpoint's proprio_projector file into the folder"
        )
    if proprio_key is None and has_projector:
        raise CheckpointFolderError(
            f"'{loaded.folder}' was trained with proprio (it has a proprio_projector file), "
            "but policy.options.proprio_key is null.\n"
            "Fix: set policy.options.proprio_key to the env's proprio observation, e.g. proprio"
        )


def proprio_projector(loaded: Loaded, options: Any) -> nn.Module:
    """The checkpoint's proprio projector, or a new one of width ``options.proprio_dim``."""
    from pcm_openvla.modeling import ProprioProjector

    hidden = loaded.model.language_model.config.hidden_size
    state = loaded.components.get("proprio_projector")
    width = state["fc1.weight"].shape[1] if state is not None else options.proprio_dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed + 1)
        projector = ProprioProjector(hidden, width)
    if state is not None:
        projector.load_state_dict(state)
    return projector.to(options.init_device)


def l1_head(loaded: Loaded, options: Any) -> nn.Module:
    """The checkpoint's L1 regression head (``action_head--<step>_checkpoint.pt``)."""
    from pcm_openvla.modeling import L1RegressionActionHead

    state = loaded.components.get("action_head")
    if state is None:
        raise CheckpointFolderError(
            f"action_head=l1 needs an action_head--<step>_checkpoint.pt in '{options.path}', which has none.\n"
            "Fix: set policy.options.action_head=tokens, or use an OpenVLA-OFT checkpoint with its L1 head"
        )
    head = L1RegressionActionHead(loaded.model.language_model.config.hidden_size, 7)
    head.load_state_dict(state)
    return head.to(options.init_device)
