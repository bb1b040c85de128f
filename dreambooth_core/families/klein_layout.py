"""FLUX.2 transformer weights in Black Forest Labs' single-file layout, and back.

diffusers' Flux2Transformer2DModel and BFL's `flux-2-klein-4b.safetensors` (what ComfyUI loads
from models/diffusion_models) hold the same tensors under other names. BFL's layout:
- embedders `img_in`, `txt_in`, `time_in.{in,out}_layer` (and [dev]'s `guidance_in`);
- the modulation shared by all blocks: `double_stream_modulation_{img,txt}.lin`,
  `single_stream_modulation.lin`;
- `double_blocks.N.{img,txt}_attn.qkv` (q, k and v stacked on the output axis), `….proj`,
  `….norm.{query,key}_norm.scale`, `double_blocks.N.{img,txt}_mlp.{0,2}` (SwiGLU in, out);
- `single_blocks.N.linear1` (q, k, v and the SwiGLU input in one matrix, as diffusers'
  `attn.to_qkv_mlp_proj` also keeps it), `linear2`, `norm.{query,key}_norm.scale`;
- `final_layer.linear`, `final_layer.adaLN_modulation.1`, whose two halves are (shift, scale)
  where diffusers' `norm_out.linear` has (scale, shift).
Only renames, one stack / split and that swap: the conversion is exact and works for any width or
depth (klein 4B, 9B, FLUX.2 [dev], the tiny model). Keys it does not know raise ModelError.

`bfl_module` is the module-level table (diffusers module -> BFL module, and which third of a
fused qkv it is); LoRA files in BFL names (families/klein_lora.py) use it too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from dreambooth_core.errors import ModelError

if TYPE_CHECKING:
    import torch

_GLOBAL = {
    "x_embedder": "img_in",
    "context_embedder": "txt_in",
    "time_guidance_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_guidance_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_guidance_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_guidance_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "double_stream_modulation_img.linear": "double_stream_modulation_img.lin",
    "double_stream_modulation_txt.linear": "double_stream_modulation_txt.lin",
    "single_stream_modulation.linear": "single_stream_modulation.lin",
    "proj_out": "final_layer.linear",
    "norm_out.linear": "final_layer.adaLN_modulation.1",
}
_SWAPPED = "norm_out.linear"
_DOUBLE = {
    "attn.to_q": "img_attn.qkv", "attn.to_k": "img_attn.qkv", "attn.to_v": "img_attn.qkv",
    "attn.add_q_proj": "txt_attn.qkv", "attn.add_k_proj": "txt_attn.qkv", "attn.add_v_proj": "txt_attn.qkv",
    "attn.to_out.0": "img_attn.proj",
    "attn.to_add_out": "txt_attn.proj",
    "attn.norm_q": "img_attn.norm.query_norm",
    "attn.norm_k": "img_attn.norm.key_norm",
    "attn.norm_added_q": "txt_attn.norm.query_norm",
    "attn.norm_added_k": "txt_attn.norm.key_norm",
    "ff.linear_in": "img_mlp.0",
    "ff.linear_out": "img_mlp.2",
    "ff_context.linear_in": "txt_mlp.0",
    "ff_context.linear_out": "txt_mlp.2",
}
# The thirds of a fused qkv, in BFL's row order.
_FUSED = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
          "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}
_SINGLE = {
    "attn.to_qkv_mlp_proj": "linear1",
    "attn.to_out": "linear2",
    "attn.norm_q": "norm.query_norm",
    "attn.norm_k": "norm.key_norm",
}
_BLOCKS = (("transformer_blocks", "double_blocks", _DOUBLE),
           ("single_transformer_blocks", "single_blocks", _SINGLE))
_BLOCK_KEY = re.compile(r"(\w+)\.(\d+)\.(.+)")
_PREFIXES = ("model.diffusion_model.", "diffusion_model.")  # all-in-one checkpoints; ComfyUI's own names


class BflModule(NamedTuple):
    """Where a diffusers module's weight lives in the BFL layout."""

    name: str  # e.g. "double_blocks.0.img_attn.qkv"
    third: int | None  # 0, 1, 2 for q, k, v inside a fused qkv; None when the whole weight
    swapped: bool  # True for the final adaLN, whose (scale, shift) halves BFL stores as (shift, scale)


def bfl_module(module: str) -> BflModule:
    """The BFL module for a diffusers module name (`transformer_blocks.0.attn.to_k`, ...)."""
    if module in _GLOBAL:
        return BflModule(_GLOBAL[module], None, module == _SWAPPED)
    if (match := _BLOCK_KEY.fullmatch(module)):
        for diffusers_blocks, bfl_blocks, table in _BLOCKS:
            if match[1] == diffusers_blocks and match[3] in table:
                name = table[match[3]]
                third = _FUSED[name].index(match[3]) if name in _FUSED else None
                return BflModule(f"{bfl_blocks}.{match[2]}.{name}", third, False)
    raise KeyError(module)


def diffusers_modules(bfl: str) -> tuple[str, ...]:
    """The diffusers module(s) a BFL module holds: three for a fused qkv, else one."""
    inverse = {value: key for key, value in _GLOBAL.items()}
    if bfl in inverse:
        return (inverse[bfl],)
    if (match := _BLOCK_KEY.fullmatch(bfl)):
        for diffusers_blocks, bfl_blocks, table in _BLOCKS:
            if match[1] == bfl_blocks:
                parts = _FUSED.get(match[3]) or tuple(k for k, v in table.items() if v == match[3])
                if parts:
                    return tuple(f"{diffusers_blocks}.{match[2]}.{part}" for part in parts)
    raise KeyError(bfl)


def to_bfl_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Flux2Transformer2DModel state dict under BFL names (bare keys, as BFL ships them)."""
    import torch

    out, thirds, unknown = {}, {}, []
    for key, tensor in state.items():
        module, _, param = key.rpartition(".")
        try:
            target = bfl_module(module)
        except KeyError:
            unknown.append(key)
            continue
        bfl_key = f"{target.name}.{_bfl_param(target.name, param)}"
        if target.third is not None:
            thirds.setdefault(bfl_key, [None] * 3)[target.third] = tensor
        else:
            out[bfl_key] = _swap_halves(tensor) if target.swapped else tensor
    if unknown:
        raise _unknown_keys("Flux2Transformer2DModel (diffusers layout)", unknown)
    for bfl_key, parts in thirds.items():
        if any(part is None for part in parts):
            raise ModelError(f"The transformer weights hold only part of {bfl_key} (q, k and v must all be "
                             "there): the state dict is incomplete.")
        out[bfl_key] = torch.cat(parts, dim=0)
    return {key: tensor.detach().contiguous() for key, tensor in out.items()}


def from_bfl_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A BFL-layout FLUX.2 state dict (bare or `model.diffusion_model.` keys) under diffusers names."""
    out, unknown = {}, []
    for key, tensor in _strip_prefix(state).items():
        module, _, param = key.rpartition(".")
        try:
            targets = diffusers_modules(module)
        except KeyError:
            unknown.append(key)
            continue
        param = "weight" if param == "scale" else param
        if len(targets) == 3:
            out.update({f"{target}.{param}": part for target, part in zip(targets, tensor.chunk(3, dim=0))})
        else:
            out[f"{targets[0]}.{param}"] = _swap_halves(tensor) if targets[0] == _SWAPPED else tensor
    if unknown:
        raise _unknown_keys("FLUX.2 single file (BFL layout)", unknown)
    return {key: tensor.contiguous() for key, tensor in out.items()}


def _bfl_param(bfl: str, param: str) -> str:
    """RMSNorm weights are `scale` in BFL's code."""
    return "scale" if bfl.endswith("_norm") and param == "weight" else param


def _swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    import torch

    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _strip_prefix(state: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    for prefix in _PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            return {key[len(prefix):]: tensor for key, tensor in state.items()}
    return state


def _unknown_keys(what: str, keys: list[str]) -> ModelError:
    shown = ", ".join(sorted(keys)[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return ModelError(f"{len(keys)} weight(s) are not part of a {what}: {shown}. The file holds another "
                      "model (or LoRA layers merged into the names); convert only a FLUX.2 transformer.")
