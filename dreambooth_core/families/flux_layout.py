"""A FLUX.1 transformer's weights in Black Forest Labs' single-file layout and back.

BFL's `flux1-dev.safetensors` (what ComfyUI's `models/diffusion_models` and Forge load) names
the modules of its own code: `double_blocks.N` for diffusers' `transformer_blocks.N`,
`single_blocks.N` for `single_transformer_blocks.N`, `img_in`, `txt_in`, `time_in`,
`vector_in`, `guidance_in`, `final_layer`. Besides renames, three things differ:

- a double block's image and text attentions hold q, k, v as one `qkv` Linear (rows
  [q; k; v]) where diffusers has `to_q/to_k/to_v` and `add_q/k/v_proj`;
- a single block's `linear1` stacks q, k, v and the MLP's input projection (rows
  [q; k; v; mlp]; diffusers' `attn.to_q/k/v` and `proj_mlp`);
- `final_layer.adaLN_modulation.1` orders its output (shift, scale), diffusers'
  `norm_out.linear` (scale, shift).

diffusers' own converter (`convert_flux_transformer_checkpoint_to_diffusers`) splits
`linear1` at a hard-coded width of 3072; this one reads the width from the weight (its
input features), so it serves every width, tiny test models included. Tensors are only
concatenated, split and renamed: a round trip gives back equal tensors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from dreambooth_core.errors import ModelError

if TYPE_CHECKING:
    import torch

# The prefix of a transformer inside an all-in-one checkpoint (next to `vae.`, `text_encoders.`).
CHECKPOINT_PREFIX = "model.diffusion_model."
# BFL module: diffusers module, for Linears (weight and bias).
_GLOBAL_LINEARS = {
    "img_in": "x_embedder", "txt_in": "context_embedder",
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "final_layer.linear": "proj_out",
}
_DOUBLE_LINEARS = {
    "img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear",
    "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out",
    "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj", "txt_mlp.2": "ff_context.net.2",
}
_DOUBLE_FUSED = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
                 "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}
# RMSNorm scales: BFL `<module>.scale`, diffusers `<module>.weight`.
_DOUBLE_NORMS = {"img_attn.norm.query_norm": "attn.norm_q", "img_attn.norm.key_norm": "attn.norm_k",
                 "txt_attn.norm.query_norm": "attn.norm_added_q",
                 "txt_attn.norm.key_norm": "attn.norm_added_k"}
_SINGLE_LINEARS = {"linear2": "proj_out", "modulation.lin": "norm.linear"}
_SINGLE_FUSED = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}
_SINGLE_NORMS = {"norm.query_norm": "attn.norm_q", "norm.key_norm": "attn.norm_k"}
_SWAPPED = ("final_layer.adaLN_modulation.1", "norm_out.linear")
_BLOCKS = {"double": ("double_blocks", "transformer_blocks"),
           "single": ("single_blocks", "single_transformer_blocks")}


class _Rule(NamedTuple):
    """One BFL tensor and the diffusers tensors it holds, rows in order."""

    bfl: str
    diffusers: tuple[str, ...]
    swap_halves: bool = False


def to_bfl_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A FluxTransformer2DModel state dict (diffusers names) under BFL's names (bare, no prefix)."""
    import torch

    blocks = _block_indices(state, "diffusers")
    converted, used = {}, set()
    for rule in _rules(blocks):
        present = [key in state for key in rule.diffusers]
        if not any(present):
            continue
        if not all(present):
            missing = [key for key, here in zip(rule.diffusers, present) if not here]
            raise ModelError(f"The FLUX.1 transformer weights lack {', '.join(missing)}, which "
                             f"{rule.bfl} needs: the state dict is incomplete.")
        parts = [state[key] for key in rule.diffusers]
        tensor = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        converted[rule.bfl] = _swap_halves(tensor) if rule.swap_halves else tensor
        used.update(rule.diffusers)
    _refuse_unknown(state, used, "a FLUX.1 transformer in diffusers' layout")
    return converted


def from_bfl_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BFL-layout FLUX.1 transformer weights (bare or under `model.diffusion_model.`) under
    diffusers' FluxTransformer2DModel names. Split tensors are views of the fused ones."""
    state = {key.removeprefix(CHECKPOINT_PREFIX): tensor for key, tensor in state.items()}
    converted, used = {}, set()
    for rule in _rules(_block_indices(state, "bfl")):
        if rule.bfl not in state:
            continue
        tensor = state[rule.bfl]
        if rule.swap_halves:
            tensor = _swap_halves(tensor)
        sizes = _row_sizes(rule, state)
        if min(sizes) <= 0 or sum(sizes) != tensor.shape[0]:
            raise ModelError(f"{rule.bfl} has {tensor.shape[0]} rows, which do not split into "
                             f"{', '.join(rule.diffusers)}: this is not a FLUX.1 transformer.")
        for key, part in zip(rule.diffusers, tensor.split(sizes, dim=0)):
            converted[key] = part
        used.add(rule.bfl)
    _refuse_unknown(state, used, "a FLUX.1 transformer in BFL's layout")
    return converted


def _rules(blocks: Mapping[str, list[int]]) -> list[_Rule]:
    rules = [_Rule(f"{_SWAPPED[0]}.{end}", (f"{_SWAPPED[1]}.{end}",), True) for end in ("weight", "bias")]
    rules += _linear_rules("", "", _GLOBAL_LINEARS, {})
    for kind, (linears, fused, norms) in (("double", (_DOUBLE_LINEARS, _DOUBLE_FUSED, _DOUBLE_NORMS)),
                                          ("single", (_SINGLE_LINEARS, _SINGLE_FUSED, _SINGLE_NORMS))):
        bfl_name, diffusers_name = _BLOCKS[kind]
        for index in blocks[kind]:
            bfl, diffusers = f"{bfl_name}.{index}.", f"{diffusers_name}.{index}."
            rules += _linear_rules(bfl, diffusers, linears, fused)
            rules += [_Rule(f"{bfl}{b}.scale", (f"{diffusers}{d}.weight",)) for b, d in norms.items()]
    return rules


def _linear_rules(bfl: str, diffusers: str, linears: dict[str, str],
                  fused: dict[str, tuple[str, ...]]) -> list[_Rule]:
    rules = []
    for end in ("weight", "bias"):
        rules += [_Rule(f"{bfl}{b}.{end}", (f"{diffusers}{d}.{end}",)) for b, d in linears.items()]
        rules += [_Rule(f"{bfl}{b}.{end}", tuple(f"{diffusers}{d}.{end}" for d in parts))
                  for b, parts in fused.items()]
    return rules


def _row_sizes(rule: _Rule, state: Mapping[str, torch.Tensor]) -> list[int]:
    rows = state[rule.bfl].shape[0]
    if len(rule.diffusers) == 1:
        return [rows]
    if len(rule.diffusers) == 3:  # q, k, v of equal width
        return [rows // 3] * 3
    # linear1: q, k, v as wide as the block (the Linear's input features), then the MLP's rows.
    weight = rule.bfl.rsplit(".", 1)[0] + ".weight"
    if weight not in state:
        raise ModelError(f"The FLUX.1 single file holds {rule.bfl} without {weight}: the file is incomplete.")
    width = state[weight].shape[1]
    return [width] * 3 + [rows - 3 * width]


def _swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    import torch

    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _block_indices(state: Mapping[str, object], layout: str) -> dict[str, list[int]]:
    column = 0 if layout == "bfl" else 1
    found = {}
    for kind, names in _BLOCKS.items():
        pattern = re.compile(re.escape(names[column]) + r"\.(\d+)\.")
        found[kind] = sorted({int(m.group(1)) for key in state if (m := pattern.match(key))})
    return found


def _refuse_unknown(state: Mapping[str, object], used: set[str], what: str) -> None:
    unknown = sorted(set(state) - used)
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise ModelError(f"Weight names unknown to {what}: {shown} ({len(unknown)} in all). Is this a "
                         "FLUX.1 transformer alone (not FLUX.2, a LoRA, or a checkpoint that also holds "
                         "the VAE and text encoders)?")
