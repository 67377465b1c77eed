"""LoRA adapters through ``peft``: injection, the merged weights, and the adapter alone in peft's layout."""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor, nn

from pcm_core.errors import ConfigError


def apply_lora(model: nn.Module, rank: int, alpha: int, dropout: float, target_modules: list[str] | str) -> nn.Module:
    """Wrap ``model`` with LoRA adapters; only the adapter parameters stay trainable.

    ``target_modules`` is peft's: module-name suffixes, a regex string, or ``"all-linear"``
    (OpenVLA's fine-tuning recipe: every ``nn.Linear`` except ``lm_head``).
    """
    from peft import LoraConfig, inject_adapter_in_model

    if target_modules == "all-linear":
        target_modules = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                                 if isinstance(module, nn.Linear) and not name.endswith("lm_head")})
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        init_lora_weights="gaussian")
    model = inject_adapter_in_model(config, model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in name)
    return model


def merged_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The state dict under the original parameter names with every adapter merged into its
    base weight (``W + scale * B @ A``); the model itself is left unchanged."""
    from peft.tuners.lora import LoraLayer

    deltas = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            deltas[f"{name}.weight"] = sum(module.get_delta_weight(a) for a in module.active_adapters)
    state = {}
    for key, value in model.state_dict().items():
        if "lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        state[key] = value + deltas[key].to(value.dtype) if key in deltas else value
    return state


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
"""peft's key prefix in ``adapter_model.safetensors`` (``PeftModel`` wraps the base model twice)."""


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The adapter weights under peft's file names: ``base_model.model.<module>.lora_A.weight``
    (the adapter name ``default`` left out, as ``PeftModel.save_pretrained`` writes them)."""
    return {
        PEFT_PREFIX + key.replace(".default.", "."): value.detach().contiguous().cpu()
        for key, value in model.state_dict().items()
        if "lora_" in key
    }


def save_adapter(model: nn.Module, folder: Path, rank: int, alpha: int, dropout: float, base: str | None) -> None:
    """``adapter_config.json`` + ``adapter_model.safetensors`` in the peft layout; ``base`` is the
    checkpoint the adapter applies to (``base_model_name_or_path``)."""
    from safetensors.torch import save_file

    state = adapter_state_dict(model)
    targets = sorted({key.split(".lora_")[0].rsplit(".", 1)[-1] for key in state})
    config = {
        "peft_type": "LORA", "r": rank, "lora_alpha": alpha, "lora_dropout": dropout, "target_modules": targets,
        "bias": "none", "base_model_name_or_path": base, "task_type": None, "inference_mode": True,
        "fan_in_fan_out": False, "init_lora_weights": "gaussian",
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    save_file(state, str(folder / ADAPTER_WEIGHTS))


def read_adapter_config(folder: Path) -> dict:
    """``adapter_config.json`` of a peft LoRA adapter folder (a two-line error when it is not one)."""
    path = folder / ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"policy.options.adapter '{folder}' is not a peft adapter folder: {ADAPTER_CONFIG} unreadable ({type(exc).__name__}).\n"
            f"Fix: point it at the folder holding {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}"
        ) from None
    if config.get("peft_type") != "LORA" or not isinstance(config.get("r"), int):
        raise ConfigError(
            f"policy.options.adapter '{folder}' holds a {config.get('peft_type')!r} adapter; only LoRA adapters load.\n"
            "Fix: export a LoRA adapter (policy.options.lora.export=adapter)"
        )
    return config


def load_adapter(model: nn.Module, folder: Path) -> None:
    """Copy the weights of ``adapter_model.safetensors`` into ``model``'s adapters (injected with
    the folder's config); every adapter weight must be there, with its shape."""
    from safetensors.torch import load_file

    saved = load_file(str(folder / ADAPTER_WEIGHTS))
    own = {PEFT_PREFIX + key.replace(".default.", "."): key for key in model.state_dict() if "lora_" in key}
    if set(saved) != set(own):
        missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
        raise ConfigError(
            f"adapter '{folder}' does not fit this model: {len(missing)} adapter weights missing "
            f"(e.g. {missing[:1]}), {len(unexpected)} unexpected (e.g. {unexpected[:1]}).\n"
            "Fix: use the base checkpoint the adapter was trained on (base_model_name_or_path in its adapter_config.json)"
        )
    state = model.state_dict()
    for file_key, key in own.items():
        if saved[file_key].shape != state[key].shape:
            raise ConfigError(
                f"adapter '{folder}': {file_key} has shape {tuple(saved[file_key].shape)}, the model {tuple(state[key].shape)}.\n"
                "Fix: use the base checkpoint the adapter was trained on"
            )
    model.load_state_dict({own[k]: v for k, v in saved.items()}, strict=False)
