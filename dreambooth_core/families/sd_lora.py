"""LoRA adapters trained with peft, written in the two formats users load.

- `<name>.safetensors` in the kohya layout that AUTOMATIC1111, ComfyUI, kohya's
  scripts and diffusers read: per adapted layer `<module>.lora_down.weight`
  (peft's lora_A), `<module>.lora_up.weight` (lora_B) and `<module>.alpha`,
  where `<module>` is `lora_unet_` or `lora_te_` plus the diffusers module path
  with dots turned into underscores (`lora_unet_down_blocks_0_attentions_0_
  transformer_blocks_0_attn1_to_q`, `lora_te_text_model_encoder_layers_0_
  self_attn_q_proj`). SDXL files are kohya's SDXL form: the UNet's modules under
  their original-layout paths (`lora_unet_input_blocks_4_1_transformer_blocks_0_
  attn1_to_q`, as AUTOMATIC1111 and ComfyUI map them onto the single file's
  `diffusion_model.*`), and the encoders as `lora_te1_` / `lora_te2_`, both with
  transformers' CLIP names. Readers scale up @ down by alpha / rank, so alpha is
  written as peft's scaling x rank: lora_alpha for plain LoRA, and still the
  right scale with rsLoRA (scaling lora_alpha / sqrt(rank)).
- a diffusers folder (`pytorch_lora_weights.safetensors`, peft key names under
  `unet.` / `text_encoder.` / `text_encoder_2.`, the LoraConfig in the file's metadata so that
  lora_alpha survives) that `pipeline.load_lora_weights(folder)` loads.

The adapted modules may come from `unet.add_adapter(config)`,
`peft.inject_adapter_in_model(config, model)` or `peft.get_peft_model(model, config)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from dreambooth_core.errors import ModelError
from dreambooth_core.families.peft_layers import lora_layers, network_metadata, peft_config, peft_state
from dreambooth_core.model.hub_layout import nested_key
from dreambooth_core.model.safetensors_files import save_safetensors, sort_metadata
from dreambooth_core.families.sd_single_file import original_unet_module

if TYPE_CHECKING:
    import torch

UNET_PREFIX = "lora_unet_"
TEXT_ENCODER_PREFIX = "lora_te_"
SDXL_TEXT_ENCODER_PREFIXES = ("lora_te1_", "lora_te2_")
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"


class LoraFiles(BaseModel):
    """Where the LoRA export went, and how big each file is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kohya_file: str = Field(description="The .safetensors for AUTOMATIC1111 / ComfyUI / kohya.")
    diffusers_folder: str = Field(description="The folder for diffusers' load_lora_weights.")
    sizes: dict[str, int] = Field(description="Bytes of each written file, by path.")


def export_lora(unet, text_encoder, out_dir: Path, name: str, adapter: str = "default",
                dtype: torch.dtype | None = None, text_encoder_2=None) -> LoraFiles:
    """Write `<out_dir>/<name>.safetensors` (kohya layout) and `<out_dir>/<name>-diffusers/`.

    `text_encoder` (and SDXL's `text_encoder_2`) is None when only the UNet has adapters;
    `dtype` (e.g. torch.float16) converts the weights, None keeps the trained dtype.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kohya, folder = out_dir / f"{name}.safetensors", out_dir / f"{name}-diffusers"
    save_kohya_lora(unet, text_encoder, kohya, adapter, dtype, text_encoder_2)
    save_diffusers_lora(unet, text_encoder, folder, adapter, dtype, text_encoder_2)
    files = [kohya, folder / DIFFUSERS_FILE]
    return LoraFiles(kohya_file=str(kohya), diffusers_folder=str(folder),
                     sizes={str(file): file.stat().st_size for file in files})


def kohya_lora_state(unet, text_encoder=None, adapter: str = "default",
                     dtype: torch.dtype | None = None, text_encoder_2=None) -> dict[str, torch.Tensor]:
    """The adapters' weights under kohya names (see module doc)."""
    import torch

    state = {}
    for key, layer in kohya_layers(unet, text_encoder, adapter, text_encoder_2).items():
        down, up = layer.lora_A[adapter].weight.detach(), layer.lora_B[adapter].weight.detach()
        state[f"{key}.lora_down.weight"] = down.contiguous()
        state[f"{key}.lora_up.weight"] = up.contiguous()
        state[f"{key}.alpha"] = torch.tensor(layer.scaling[adapter] * layer.r[adapter], dtype=down.dtype)
    return {key: tensor.to(dtype) if dtype else tensor for key, tensor in state.items()}


def kohya_layers(unet, text_encoder=None, adapter: str = "default", text_encoder_2=None) -> dict:
    """The LoRA layers of the models by kohya module name (without .lora_down etc.)."""
    sdxl = is_sdxl_unet(unet)
    layers = {UNET_PREFIX + _unet_module_name(unet, name, sdxl).replace(".", "_"): layer
              for name, layer in lora_layers(unet, adapter).items()}
    prefixes = SDXL_TEXT_ENCODER_PREFIXES if sdxl else (TEXT_ENCODER_PREFIX,)
    for prefix, encoder in zip(prefixes, (text_encoder, text_encoder_2)):
        if encoder is not None:
            layers |= _encoder_layers(encoder, adapter, prefix)
    return layers


def is_sdxl_unet(unet) -> bool:
    return getattr(unet.config, "addition_embed_type", None) == "text_time"


def _unet_module_name(unet, name: str, sdxl: bool) -> str:
    return original_unet_module(unet.config, name) if sdxl else name


def _encoder_layers(encoder, adapter: str, prefix: str) -> dict:
    layers = lora_layers(encoder, adapter)
    # transformers 5 flattened the CLIP models; the kohya names keep the "text_model." of 4.x.
    level = "" if any(n.startswith("text_model.") for n in layers) else "text_model."
    return {prefix + (level + name).replace(".", "_"): layer for name, layer in layers.items()}


def load_kohya_lora(unet, text_encoder, state: dict[str, torch.Tensor], adapter: str = "default",
                    text_encoder_2=None) -> None:
    """Copy a kohya-layout state (as kohya_lora_state writes it) into the models' LoRA layers,
    which must be the same layers with the same rank."""
    import torch

    layers = kohya_layers(unet, text_encoder, adapter, text_encoder_2)
    expected = {f"{key}.{part}" for key in layers for part in ("lora_down.weight", "lora_up.weight", "alpha")}
    if expected != state.keys():
        differ = sorted(expected ^ state.keys())
        raise ModelError(f"the LoRA file does not hold the session's LoRA layers ({len(differ)} keys differ, "
                         f"e.g. {differ[0]}): it was written with other LoRA settings.")
    with torch.no_grad():
        for key, layer in layers.items():
            layer.lora_A[adapter].weight.copy_(state[f"{key}.lora_down.weight"])
            layer.lora_B[adapter].weight.copy_(state[f"{key}.lora_up.weight"])


def save_kohya_lora(unet, text_encoder, path: Path, adapter: str = "default",
                    dtype: torch.dtype | None = None, text_encoder_2=None) -> None:
    """Write the kohya-layout .safetensors, with kohya's network metadata."""
    metadata = network_metadata("networks.lora", next(iter(lora_layers(unet, adapter).values())), adapter)
    save_safetensors(kohya_lora_state(unet, text_encoder, adapter, dtype, text_encoder_2), path, metadata)


def save_diffusers_lora(unet, text_encoder, folder: Path, adapter: str = "default",
                        dtype: torch.dtype | None = None, text_encoder_2=None) -> None:
    """Write the folder diffusers' `load_lora_weights` reads, the LoraConfigs in its metadata."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    def part(model, key=lambda k: k):
        if model is None:
            return None, None
        return {key(k): t for k, t in peft_state(model, adapter, dtype).items()}, peft_config(model, adapter)

    unet_state, unet_config = part(unet)
    # The transformers 4.x module names (text_model.*), which diffusers with 4.x and 5.x both load.
    text_state, text_config = part(text_encoder, nested_key)
    layers = {"unet_lora_layers": unet_state, "text_encoder_lora_layers": text_state,
              "unet_lora_adapter_metadata": unet_config, "text_encoder_lora_adapter_metadata": text_config}
    if is_sdxl_unet(unet):
        text_state_2, text_config_2 = part(text_encoder_2, nested_key)
        layers |= {"text_encoder_2_lora_layers": text_state_2,
                   "text_encoder_2_lora_adapter_metadata": text_config_2}
    pipeline = StableDiffusionXLPipeline if is_sdxl_unet(unet) else StableDiffusionPipeline
    pipeline.save_lora_weights(str(folder), safe_serialization=True, **layers)
    sort_metadata(folder / DIFFUSERS_FILE)
