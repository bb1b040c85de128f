"""LoRA adapters on a FLUX.2 [klein] transformer, written in the two forms users load.

- `<name>.safetensors`, kohya's layout in BFL module names, which diffusers' Flux2KleinPipeline
  (`load_lora_weights`, through its kohya converter) and ComfyUI (its `lora_unet_<BFL key>` names
  for every model weight) both read: per module `lora_unet_<BFL module, dots as _>` with
  `.lora_down.weight` (peft's lora_A), `.lora_up.weight` (lora_B) and `.alpha`, scaled by
  alpha / rank as both readers do. BFL stacks q, k and v in one `qkv` weight, so their three LoRAs
  are written as one exactly: downs stacked (3r x in), ups block-diagonal (3h x 3r), alpha x 3 so
  that alpha / rank is unchanged; diffusers sees the zero blocks and splits them back into three
  rank-r LoRAs. A third that was not trained is written as zeros.
- a diffusers folder (`pytorch_lora_weights.safetensors`, `transformer.<diffusers module>.lora_A/
  lora_B.weight`) for `load_lora_weights(folder)`, with peft's scale (lora_alpha / r, or / sqrt(r)
  with rsLoRA) multiplied into lora_B and no alpha at all: diffusers' FLUX.2 loader refuses
  lora_A/B files that carry `.alpha` keys, and without alpha it (and ComfyUI) use a scale of 1.

Only the kohya file is limited: diffusers' kohya reader maps the blocks, the embedders and
`final_layer.linear`, and drops LoRA on the shared modulation and the final adaLN, so those raise
ModelError there (the diffusers folder holds any Linear).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from dreambooth_core.errors import ModelError
from dreambooth_core.families.klein_layout import BflModule, bfl_module
from dreambooth_core.families.peft_layers import lora_layers, network_metadata
from dreambooth_core.model.safetensors_files import save_safetensors

if TYPE_CHECKING:
    import torch

# diffusers' train_dreambooth_lora_flux2_klein.py default: the double blocks' image attention
# (to_q, to_k, to_v, to_out.0) and every Linear of the single blocks (to_qkv_mlp_proj, to_out).
# A regular expression (peft full-matches it against module names) because the single blocks'
# `attn.to_out` is a Linear while the double blocks' is a ModuleList peft cannot adapt: peft's list
# form matches name suffixes and would hit both (diffusers lists `single_transformer_blocks.{i}`
# for i < 24 instead, which only fits 9B's depth).
KLEIN_LORA_TARGETS = (r"(transformer_blocks\.\d+\.attn\.(to_q|to_k|to_v|to_out\.0)"
                      r"|single_transformer_blocks\.\d+\.attn\.(to_qkv_mlp_proj|to_out))")
KOHYA_PREFIX = "lora_unet_"
KOHYA_NETWORK_MODULE = "networks.lora_flux"  # kohya's FLUX network, whose key names these are
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
_NOT_IN_KOHYA = ("double_stream_modulation_img.lin", "double_stream_modulation_txt.lin",
                 "single_stream_modulation.lin", "final_layer.adaLN_modulation.1", "guidance_in.in_layer",
                 "guidance_in.out_layer")


class KleinLoraFiles(BaseModel):
    """Where the klein LoRA export went, and how big each file is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kohya_file: str = Field(description="The .safetensors for ComfyUI and diffusers (kohya, BFL names).")
    diffusers_folder: str = Field(description="The folder for diffusers' load_lora_weights.")
    sizes: dict[str, int] = Field(description="Bytes of each written file, by path.")


def export_klein_lora(transformer, out_dir: Path, name: str, adapter: str = "default",
                      dtype: torch.dtype | None = None) -> KleinLoraFiles:
    """Write `<out_dir>/<name>.safetensors` (kohya layout) and `<out_dir>/<name>-diffusers/`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kohya, folder = out_dir / f"{name}.safetensors", out_dir / f"{name}-diffusers"
    save_kohya_klein_lora(transformer, kohya, adapter, dtype)
    save_diffusers_klein_lora(transformer, folder, adapter, dtype)
    files = [kohya, folder / DIFFUSERS_FILE]
    return KleinLoraFiles(kohya_file=str(kohya), diffusers_folder=str(folder),
                          sizes={str(file): file.stat().st_size for file in files})


def kohya_klein_lora_state(transformer, adapter: str = "default",
                           dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The adapters under kohya names in the BFL layout, q/k/v fused (see module doc)."""
    fused: dict[str, dict[int, object]] = {}
    state = {}
    for module, layer in lora_layers(transformer, adapter).items():
        target = bfl_module_for_lora(module)
        if target.third is None:
            down, up = _weights(layer, adapter)
            state |= _kohya_entry(target.name, down, up, layer.scaling[adapter] * down.shape[0])
        else:
            fused.setdefault(target.name, {})[target.third] = layer
    for name, thirds in fused.items():
        down, up, scale = _fused_qkv(name, thirds, adapter)
        state |= _kohya_entry(name, down, up, scale * down.shape[0])
    return {key: tensor.to(dtype) if dtype else tensor for key, tensor in state.items()}


def save_kohya_klein_lora(transformer, path: Path, adapter: str = "default",
                          dtype: torch.dtype | None = None) -> None:
    """Write the kohya-layout .safetensors, with kohya's network metadata (rank and alpha of one
    unfused module: the fused qkv modules hold 3x both)."""
    metadata = network_metadata(KOHYA_NETWORK_MODULE, next(iter(lora_layers(transformer, adapter).values())),
                                adapter)
    save_safetensors(kohya_klein_lora_state(transformer, adapter, dtype), Path(path), metadata)


def diffusers_klein_lora_state(transformer, adapter: str = "default",
                               dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The adapters under diffusers module names (no `transformer.` prefix), scale baked into lora_B."""
    state = {}
    for module, layer in lora_layers(transformer, adapter).items():
        down, up = _weights(layer, adapter)
        state[f"{module}.lora_A.weight"] = down
        state[f"{module}.lora_B.weight"] = (up * layer.scaling[adapter]).contiguous()
    return {key: tensor.to(dtype) if dtype else tensor for key, tensor in state.items()}


def save_diffusers_klein_lora(transformer, folder: Path, adapter: str = "default",
                              dtype: torch.dtype | None = None) -> None:
    """Write the folder diffusers' `Flux2KleinPipeline.load_lora_weights` reads."""
    from diffusers import Flux2KleinPipeline

    # No adapter metadata: its lora_alpha would be applied on top of the baked scale.
    Flux2KleinPipeline.save_lora_weights(str(folder), transformer_lora_layers=diffusers_klein_lora_state(
        transformer, adapter, dtype), safe_serialization=True)


def bfl_module_for_lora(module: str) -> BflModule:
    """The BFL module a LoRA on diffusers `module` goes to in the kohya file."""
    try:
        target = bfl_module(module)
    except KeyError:
        raise ModelError(f"The LoRA layer {module} is not a FLUX.2 transformer module: the adapters were "
                         "added to another model.") from None
    if target.name in _NOT_IN_KOHYA:
        raise ModelError(
            f"A LoRA on {module} ({target.name} in the single-file layout) cannot go into the kohya LoRA "
            "file: diffusers' FLUX.2 kohya reader drops it. Leave it out of the LoRA targets (the default "
            "targets do), or load the diffusers folder instead.")
    return target


def _fused_qkv(name: str, thirds: dict, adapter: str):
    """(down, up, scale) of the exact fused LoRA of a qkv weight from its q, k and v LoRAs."""
    import torch

    layers = list(thirds.values())
    if len({(layer.r[adapter], layer.scaling[adapter]) for layer in layers}) > 1:
        raise ModelError(f"The LoRAs on the q, k and v of {name} differ in rank or alpha, so they cannot be "
                         "written as the one LoRA of the fused weight. Give them the same rank and alpha.")
    rank, scale = layers[0].r[adapter], layers[0].scaling[adapter]
    base = layers[0].get_base_layer()
    downs, ups = [], []
    for third in range(3):
        if third in thirds:
            down, up = _weights(thirds[third], adapter)
        else:  # not trained: contributes nothing
            down = base.weight.new_zeros(rank, base.in_features)
            up = base.weight.new_zeros(base.out_features, rank)
        downs.append(down)
        ups.append(up)
    return torch.cat(downs, dim=0), torch.block_diag(*ups), scale


def _weights(layer, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
    down, up = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
    return down.detach().contiguous(), up.detach().contiguous()


def _kohya_entry(bfl: str, down: torch.Tensor, up: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
    import torch

    key = KOHYA_PREFIX + bfl.replace(".", "_")
    return {f"{key}.lora_down.weight": down.contiguous(), f"{key}.lora_up.weight": up.contiguous(),
            f"{key}.alpha": torch.tensor(alpha, dtype=down.dtype)}

