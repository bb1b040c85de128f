"""What every family's LoRA files are written from: the peft LoRA layers a model carries, their
tensors under peft's names, and the LoraConfig that states their alpha."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dreambooth_core.errors import ModelError

if TYPE_CHECKING:
    import torch

PEFT_WRAPPER = "base_model.model."


def lora_layers(model, adapter: str = "default") -> dict:
    """The model's peft LoRA layers holding `adapter`, by module path (without peft's wrapper prefix)."""
    from peft.tuners.lora import LoraLayer

    layers = {name.removeprefix(PEFT_WRAPPER): module for name, module in model.named_modules()
              if isinstance(module, LoraLayer) and adapter in module.lora_A}
    if not layers:
        raise ModelError(
            f"The {type(model).__name__} has no LoRA adapter named {adapter!r}, so there is nothing to "
            "export. Add adapters with peft (LoraConfig) before training, or export the full model instead.")
    for name, layer in layers.items():
        if layer.use_dora.get(adapter) or getattr(layer, "lora_bias", {}).get(adapter):
            raise ModelError(
                f"The LoRA layer {name} uses DoRA or a LoRA bias, which the LoRA files "
                "AUTOMATIC1111, ComfyUI, Forge and kohya load cannot hold. Train with plain LoRA "
                "(use_dora=False, lora_bias=False).")
    return layers


def peft_state(model, adapter: str = "default", dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The adapter's lora_A / lora_B tensors under peft's own key names (what diffusers' LoRA
    folders hold)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=adapter)
    return {key.removeprefix(PEFT_WRAPPER): (t.to(dtype) if dtype else t).detach().contiguous()
            for key, t in state.items()}


def peft_config(model, adapter: str = "default") -> dict:
    """The adapter's LoraConfig as a dict, in the same order on every run (for equal files)."""
    configs = getattr(model, "peft_config", None) or {}
    if adapter not in configs:
        raise ModelError(f"The {type(model).__name__} carries no peft LoraConfig for adapter {adapter!r}; "
                         "add adapters with peft (add_adapter, inject_adapter_in_model or get_peft_model).")
    # Sets (target_modules) iterate in a per-process order: sort them for equal files.
    return {k: sorted(v) if isinstance(v, set) else v for k, v in configs[adapter].to_dict().items()}


def network_metadata(module: str, layer, adapter: str = "default") -> dict[str, str]:
    """kohya's network metadata, which AUTOMATIC1111, Forge and model sites show: module, rank, alpha."""
    rank = layer.r[adapter]
    alpha = layer.scaling[adapter] * rank
    return {"ss_network_module": module, "ss_network_dim": str(rank),
            "ss_network_alpha": str(int(alpha)) if float(alpha).is_integer() else str(alpha)}
