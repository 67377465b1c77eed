"""LoRA adapters through ``peft`` and the merged weights written on export."""

from __future__ import annotations

from torch import Tensor, nn


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
