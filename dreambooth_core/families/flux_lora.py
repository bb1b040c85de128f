"""LoRA adapters of a FLUX.1 transformer (and optionally its CLIP text encoder), trained with
peft, written in the two forms users load.

- `<name>.safetensors`, one file for ComfyUI, Forge and diffusers: per adapted module
  `transformer.<diffusers module>.lora_A.weight`, `.lora_B.weight` and `.alpha` (CLIP:
  `text_encoder.text_model.encoder.layers.N.self_attn.q_proj...`), plus kohya's network
  metadata. Why this form and not kohya's `lora_unet_<BFL module>` one:
  * ComfyUI (`comfy/lora.py model_lora_keys_unet`, Flux branch) maps every
    `transformer.<diffusers module>` through `utils.flux_to_diffusers`, onto the BFL weight
    or its q/k/v/mlp rows (single blocks' `attn.to_q` -> rows [0, h) of `linear1`), and CLIP's
    `text_encoder.text_model.encoder.layers.N.<module>` (`model_lora_keys_clip`); it reads
    `lora_B/lora_A` and scales by `{x}.alpha` / rank, or by 1.0 when there is no alpha, so
    alpha must be in the file. Checked with ComfyUI's own code: benchmarks/comfyui_check.py.
  * Forge's vendored ComfyUI mapping (`packages_3rdparty/comfyui_lora_collection/lora.py`)
    has the same `transformer.` entries for FLUX models and reads the same suffixes and alpha.
  * diffusers' `FluxPipeline.load_lora_weights` takes `transformer.` / `text_encoder.` keys
    with `.alpha` (it turns them into per-module lora_alpha). Its kohya reader instead
    hard-codes FLUX.1's 19 + 38 blocks and width 3072, so a kohya file would not load into
    other widths (our tiny test models), and kohya stores q, k, v fused, which peft trains apart.
  CLIP keys keep transformers 4.x's `text_model.` level, which ComfyUI requires and diffusers
  with transformers 4.x and 5.x loads.
- a diffusers folder (`pytorch_lora_weights.safetensors` without alpha keys, peft names under
  `transformer.` / `text_encoder.`, the LoraConfigs in the file's metadata so that lora_alpha,
  rsLoRA and per-module ranks survive) that `pipeline.load_lora_weights(folder)` reads
  exactly as `FluxPipeline.save_lora_weights` wrote it.

Alpha is written as peft's scaling x rank: lora_alpha for plain LoRA, and still the right
scale with rsLoRA (scaling lora_alpha / sqrt(rank)). It stays float32 whatever `dtype` the
weights are saved in, so that the scale is exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from dreambooth_core.errors import ModelError
from dreambooth_core.families.peft_layers import lora_layers, network_metadata, peft_config, peft_state
from dreambooth_core.model.hub_layout import nested_key
from dreambooth_core.model.safetensors_files import save_safetensors, sort_metadata

if TYPE_CHECKING:
    import torch

# diffusers' train_dreambooth_lora_flux.py default. peft matches by suffix, so the attn.to_q/k/v
# entries also adapt the single-stream blocks' attention; the single blocks' proj_mlp/proj_out
# and the modulation Linears are left alone.
FLUX_TRANSFORMER_LORA_TARGETS = (
    "attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0",
    "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
    "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
)
# --train_text_encoder in the same script: CLIP's attention only (T5 is never trained).
FLUX_TEXT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
TRANSFORMER_PREFIX, TEXT_ENCODER_PREFIX = "transformer.", "text_encoder."
NETWORK_MODULE = "networks.lora_flux"  # what kohya's FLUX.1 LoRAs carry


class FluxLoraFiles(BaseModel):
    """Where the FLUX.1 LoRA export went, and how big each file is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    single_file: str = Field(description="The .safetensors for ComfyUI, Forge and diffusers.")
    diffusers_folder: str = Field(description="The folder for diffusers' load_lora_weights.")
    sizes: dict[str, int] = Field(description="Bytes of each written file, by path.")


def export_flux_lora(transformer, text_encoder, out_dir: Path, name: str, adapter: str = "default",
                     dtype: torch.dtype | None = None) -> FluxLoraFiles:
    """Write `<out_dir>/<name>.safetensors` and `<out_dir>/<name>-diffusers/`.

    `text_encoder` (CLIP) is None when only the transformer has adapters; `dtype` (e.g.
    torch.bfloat16) converts the weights, None keeps the trained dtype.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    single = save_flux_lora_file(transformer, text_encoder, out_dir / f"{name}.safetensors", adapter, dtype)
    folder = save_flux_diffusers_lora(transformer, text_encoder, out_dir / f"{name}-diffusers", adapter,
                                      dtype)
    files = [single, folder / DIFFUSERS_FILE]
    return FluxLoraFiles(single_file=str(single), diffusers_folder=str(folder),
                         sizes={str(file): file.stat().st_size for file in files})


def flux_lora_state(transformer, text_encoder=None, adapter: str = "default",
                    dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The single file's tensors: lora_A, lora_B and alpha of every adapted module."""
    import torch

    state = {}
    for key, layer in flux_lora_layers(transformer, text_encoder, adapter).items():
        down, up = layer.lora_A[adapter].weight.detach(), layer.lora_B[adapter].weight.detach()
        state[f"{key}.lora_A.weight"] = (down.to(dtype) if dtype else down).contiguous()
        state[f"{key}.lora_B.weight"] = (up.to(dtype) if dtype else up).contiguous()
        state[f"{key}.alpha"] = torch.tensor(layer.scaling[adapter] * layer.r[adapter], dtype=torch.float32)
    return state


def save_flux_lora_file(transformer, text_encoder, path: Path, adapter: str = "default",
                        dtype: torch.dtype | None = None) -> Path:
    """Write the single .safetensors (see module doc) with kohya's network metadata."""
    metadata = network_metadata(NETWORK_MODULE,
                                next(iter(lora_layers(transformer, adapter).values())), adapter)
    save_safetensors(flux_lora_state(transformer, text_encoder, adapter, dtype), Path(path), metadata)
    return Path(path)


def save_flux_diffusers_lora(transformer, text_encoder, folder: Path, adapter: str = "default",
                             dtype: torch.dtype | None = None) -> Path:
    """Write the folder diffusers' `load_lora_weights` reads, the LoraConfigs in its metadata."""
    from diffusers import FluxPipeline

    layers = {"transformer_lora_layers": peft_state(transformer, adapter, dtype),
              "transformer_lora_adapter_metadata": peft_config(transformer, adapter)}
    if text_encoder is not None:
        # The transformers 4.x module names (text_model.*), which diffusers with 4.x and 5.x both load.
        layers |= {"text_encoder_lora_layers": {nested_key(k): t for k, t in
                                                peft_state(text_encoder, adapter, dtype).items()},
                   "text_encoder_lora_adapter_metadata": peft_config(text_encoder, adapter)}
    folder = Path(folder)
    FluxPipeline.save_lora_weights(str(folder), safe_serialization=True, **layers)
    sort_metadata(folder / DIFFUSERS_FILE)
    return folder


def flux_lora_layers(transformer, text_encoder=None, adapter: str = "default") -> dict:
    """The peft LoRA layers holding `adapter`, by their name in the files (without .lora_A etc.)."""
    layers = {TRANSFORMER_PREFIX + name: layer for name, layer in lora_layers(transformer, adapter).items()}
    if text_encoder is not None:
        layers |= {TEXT_ENCODER_PREFIX + nested_key(name): layer
                   for name, layer in lora_layers(text_encoder, adapter).items()}
    return layers
