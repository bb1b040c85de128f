"""Stable Diffusion 1.x, 2.x and SDXL weights in the original single-file layout.

Diffusers stores the UNet, VAE and text encoder as separate modules with their
own key names; AUTOMATIC1111, ComfyUI and the original CompVis / Stability AI
code expect one state dict whose keys follow the original LDM modules. This
module renames (never recomputes) the diffusers keys into that layout. The
renaming is built from each model's config, so any block count or
`layers_per_block` works. SD 2.x differs in two places: its UNet's proj_in /
proj_out are linear layers (2-D weights, kept as they are, where SD 1.x has 1x1
convolutions), and its text encoder is OpenCLIP (sd_openclip_layout.py).

The original layout does not record what the UNet predicts (epsilon or
v-prediction). Loaders decide it themselves: diffusers' `from_single_file` takes
the scheduler config of the `config=` diffusers folder or repo it is given;
without one it picks a default repo by architecture (SD 2.x: the 768 px
v-prediction SD 2.1), and with an `original_config` YAML it guesses from the
checkpoint's `global_step` (875000 means the SD 2.x 512 px epsilon base).
AUTOMATIC1111 runs the SD 2.x UNet on a test input (or reads a YAML beside the
file); ComfyUI looks at the spread of one norm bias. So the .safetensors export
also carries the Stability AI model-spec metadata (`modelspec.prediction_type`
"epsilon" or "v", `modelspec.architecture`, `modelspec.resolution`; see
sd_model_spec.py) for tools that read it, this tool's conversion included.

Every diffusers key must be known to the mapping: an unknown key (a LoRA layer,
an SDXL embedding, ...) raises `ModelError` instead of being dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from dreambooth_core.errors import ModelError
from dreambooth_core.families.sd_openclip_layout import sdxl_openclip_state, to_openclip_state

if TYPE_CHECKING:
    import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model.transformer.text_model."

# A rule turns the part of a key after a module prefix ("conv1.weight") into
# its original name, or None when the mapping does not know it.
Rule = Callable[[str], str | None]

_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
               "conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
# Inside a cross-attention transformer both layouts use the same names.
_TRANSFORMER_KEY = re.compile(
    r"(norm|proj_in|proj_out"
    r"|transformer_blocks\.\d+\.(norm[123]|attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj|ff\.net\.2))"
    r"\.(weight|bias)")
_CLIP_KEY = re.compile(
    r"embeddings\.(token_embedding\.weight|position_embedding\.weight|position_ids)"
    r"|encoder\.layers\.\d+\."
    r"(self_attn\.[qkv]_proj|self_attn\.out_proj|layer_norm[12]|mlp\.fc[12])\.(weight|bias)"
    r"|final_layer_norm\.(weight|bias)")


def to_single_file_state(unet, vae, text_encoder, openclip_extras: Mapping[str, torch.Tensor] | None = None,
                         ) -> dict[str, torch.Tensor]:
    """The three SD 1.x or 2.x modules' weights as one original-layout state dict.

    The family comes from the text encoder (OpenAI CLIP: SD 1.x, OpenCLIP: SD 2.x).
    `openclip_extras` (SD 2.x only; `openclip_layout.load_extras(base_folder)`) are the base
    model's final text-encoder layer, text_projection and logit_scale; without them neutral
    values are written (see dreambooth_core/model/openclip_layout.py). UNet and VAE tensors keep their
    dtype and device and share memory with the modules.
    """
    family = _text_encoder_family(text_encoder)
    state = _rename(unet.state_dict(), _unet_rules(unet.config), UNET_PREFIX, "UNet")
    vae_state = _rename(vae.state_dict(), _vae_rules(vae.config), VAE_PREFIX, "VAE")
    state.update({key: _as_conv_1x1(key, tensor) for key, tensor in vae_state.items()})
    if family == "sd1":
        state.update(_rename_text_encoder(text_encoder.state_dict()))
    else:
        state.update(to_openclip_state(text_encoder, openclip_extras))
    return state


def _rename(state: Mapping[str, torch.Tensor], rules: list[tuple[str, str, Rule]],
            prefix: str, component: str) -> dict[str, torch.Tensor]:
    renamed, unknown = {}, []
    for key, tensor in state.items():
        new_key = _original_key(key, rules)
        if new_key is None:
            unknown.append(key)
            continue
        assert prefix + new_key not in renamed, f"two {component} keys map to {new_key}"
        renamed[prefix + new_key] = tensor.detach().contiguous()
    if unknown:
        raise _unknown_keys_error(component, unknown)
    return renamed


def original_unet_module(config, module: str) -> str:
    """The original-layout path of a UNet module (`down_blocks.1.attentions.0.proj_in` ->
    `input_blocks.4.1.proj_in`), for a module holding a weight."""
    key = _original_key(f"{module}.weight", _unet_rules(config))
    if key is None:
        raise _unknown_keys_error("UNet", [f"{module}.weight"])
    return key.removesuffix(".weight")


def _original_key(key: str, rules: list[tuple[str, str, Rule]]) -> str | None:
    for diffusers_prefix, original_prefix, rule in rules:
        if key.startswith(diffusers_prefix):
            rest = rule(key[len(diffusers_prefix):])
            return None if rest is None else original_prefix + rest
    return None


def _unknown_keys_error(component: str, keys: list[str]) -> ModelError:
    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return ModelError(
        f"The {component} has {len(keys)} weight(s) that have no place in a Stable Diffusion "
        f"single file: {shown}. Merge or remove adapters (e.g. LoRA) before exporting, or export "
        f"in diffusers format only.")


def _param(rest: str) -> str | None:
    return rest if rest in ("weight", "bias") else None


def _renamed_modules(table: Mapping[str, str]) -> Rule:
    def rule(rest: str) -> str | None:
        module, _, param = rest.rpartition(".")
        if module not in table or param not in ("weight", "bias"):
            return None
        return f"{table[module]}.{param}"
    return rule


def _transformer(rest: str) -> str | None:
    return rest if _TRANSFORMER_KEY.fullmatch(rest) else None


def _per_block(layers_per_block: int | list[int], blocks: int) -> list[int]:
    if isinstance(layers_per_block, int):
        return [layers_per_block] * blocks
    return list(layers_per_block)


def _unet_rules(config) -> list[tuple[str, str, Rule]]:
    _check_unet_blocks(config)
    rules = [("conv_in.", "input_blocks.0.0.", _param),
             ("time_embedding.linear_1.", "time_embed.0.", _param),
             ("time_embedding.linear_2.", "time_embed.2.", _param),
             ("mid_block.resnets.0.", "middle_block.0.", _renamed_modules(_UNET_RESNET)),
             ("mid_block.attentions.0.", "middle_block.1.", _transformer),
             ("mid_block.resnets.1.", "middle_block.2.", _renamed_modules(_UNET_RESNET)),
             ("conv_norm_out.", "out.0.", _param),
             ("conv_out.", "out.2.", _param)]
    layers = _per_block(config.layers_per_block, len(config.down_block_types))
    return rules + _unet_down_rules(config.down_block_types, layers) + \
        _unet_up_rules(config.up_block_types, layers[::-1])


def _unet_down_rules(block_types: list[str], layers: list[int]) -> list[tuple[str, str, Rule]]:
    rules, index = [], 1  # input_blocks.0 is conv_in
    for i, block_type in enumerate(block_types):
        for j in range(layers[i]):
            rules.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{index}.0.",
                          _renamed_modules(_UNET_RESNET)))
            if block_type.startswith("CrossAttn"):
                rules.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{index}.1.", _transformer))
            index += 1
        if i < len(block_types) - 1:
            rules.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{index}.0.op.", _param))
            index += 1
    return rules


def _unet_up_rules(block_types: list[str], layers: list[int]) -> list[tuple[str, str, Rule]]:
    rules, index = [], 0
    for i, block_type in enumerate(block_types):
        has_attention = block_type.startswith("CrossAttn")
        for j in range(layers[i] + 1):  # one more resnet than the down block: it takes the skip too
            rules.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{index}.0.",
                          _renamed_modules(_UNET_RESNET)))
            if has_attention:
                rules.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{index}.1.", _transformer))
            index += 1
        if i < len(block_types) - 1:
            # The upsampler sits in the block's last output block, after its resnet (and attention).
            slot = 2 if has_attention else 1
            rules.append((f"up_blocks.{i}.upsamplers.0.conv.",
                          f"output_blocks.{index - 1}.{slot}.conv.", _param))
    return rules


def _check_unet_blocks(config) -> None:
    known = {"CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"}
    unknown = [t for t in [*config.down_block_types, *config.up_block_types] if t not in known]
    mid = config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid != "UNetMidBlock2DCrossAttn":
        unknown.append(str(mid))
    if unknown or len(config.down_block_types) != len(config.up_block_types):
        raise ModelError(
            f"The UNet's blocks ({', '.join(unknown) or 'unequal down/up block counts'}) do not exist in a "
            f"Stable Diffusion 1.x/2.x single file. Export this model in diffusers format only.")


def _vae_rules(config) -> list[tuple[str, str, Rule]]:
    _check_vae_blocks(config)
    blocks = len(config.block_out_channels)
    rules = [("quant_conv.", "quant_conv.", _param), ("post_quant_conv.", "post_quant_conv.", _param)]
    for part in ("encoder", "decoder"):
        rules += [(f"{part}.conv_in.", f"{part}.conv_in.", _param),
                  (f"{part}.conv_norm_out.", f"{part}.norm_out.", _param),
                  (f"{part}.conv_out.", f"{part}.conv_out.", _param),
                  (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", _renamed_modules(_VAE_RESNET)),
                  (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.",
                   _renamed_modules(_VAE_ATTENTION)),
                  (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", _renamed_modules(_VAE_RESNET))]
    for i in range(blocks):
        is_last = i == blocks - 1
        for j in range(config.layers_per_block):
            rules.append((f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.",
                          _renamed_modules(_VAE_RESNET)))
        if not is_last:
            rules.append((f"encoder.down_blocks.{i}.downsamplers.0.conv.",
                          f"encoder.down.{i}.downsample.conv.",
                          _param))
        # The original decoder counts its levels from the highest resolution, diffusers from the lowest.
        level = blocks - 1 - i
        for j in range(config.layers_per_block + 1):
            rules.append((f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{level}.block.{j}.",
                          _renamed_modules(_VAE_RESNET)))
        if not is_last:
            rules.append((f"decoder.up_blocks.{i}.upsamplers.0.conv.", f"decoder.up.{level}.upsample.conv.",
                          _param))
    return rules


def _check_vae_blocks(config) -> None:
    types = {*config.down_block_types, *config.up_block_types}
    if not types <= {"DownEncoderBlock2D", "UpDecoderBlock2D"} \
            or not config.get("mid_block_add_attention", True):
        raise ModelError(
            f"The VAE's blocks ({', '.join(sorted(types))}) do not match a Stable Diffusion KL "
            f"autoencoder. Export this model in diffusers format only.")


def _as_conv_1x1(key: str, tensor: torch.Tensor) -> torch.Tensor:
    """The original VAE attention uses 1x1 convolutions where diffusers uses linear layers."""
    if ".mid.attn_1." in key and tensor.ndim == 2:
        return tensor.reshape(*tensor.shape, 1, 1)
    return tensor


def _text_encoder_family(text_encoder) -> str:
    from transformers import CLIPTextModel

    if not isinstance(text_encoder, CLIPTextModel):
        raise ModelError(
            f"The text encoder is a {type(text_encoder).__name__}; a Stable Diffusion 1.x/2.x single file "
            f"needs a CLIPTextModel. Export this model in diffusers format only.")
    # SD 2.x ships OpenCLIP converted to a CLIPTextModel, recognisable by plain GELU.
    activation = text_encoder.config.hidden_act
    if activation not in ("quick_gelu", "gelu"):
        raise ModelError(
            f"The text encoder's activation is {activation!r}: neither SD 1.x's OpenAI CLIP (quick_gelu) "
            "nor SD 2.x's OpenCLIP (gelu). Export this model in diffusers format only.")
    return "sd1" if activation == "quick_gelu" else "sd2"


def _rename_text_encoder(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # transformers < 5 nests the weights under "text_model."; 5.x does not.
    renamed, unknown = {}, []
    for key, tensor in state.items():
        bare = key.removeprefix("text_model.")
        if _CLIP_KEY.fullmatch(bare):
            renamed[TEXT_ENCODER_PREFIX + bare] = tensor.detach().contiguous()
        else:
            unknown.append(key)
    if unknown:
        raise _unknown_keys_error("text encoder", unknown)
    return renamed


# SDXL weights in the original single-file layout (what AUTOMATIC1111, ComfyUI and
# Stability AI's code load):
#
#     model.diffusion_model.*                          the UNet, as SD's (above), plus its
#                                                      micro-conditioning MLP as label_emb.0.{0,2}
#     first_stage_model.*                              the VAE, as SD's
#     conditioner.embedders.0.transformer.text_model.* the first text encoder (OpenAI CLIP), HF names
#     conditioner.embedders.1.model.*                  the second (OpenCLIP), fused attention and
#                                                      text_projection (sd_openclip_layout.py)
#
# Key names follow diffusers' scripts/convert_diffusers_to_original_sdxl.py.

FIRST_TEXT_PREFIX = "conditioner.embedders.0.transformer.text_model."
SECOND_TEXT_PREFIX = "conditioner.embedders.1.model."
_MICRO_CONDITIONING = [("add_embedding.linear_1.", "label_emb.0.0.", _param),
                       ("add_embedding.linear_2.", "label_emb.0.2.", _param)]


def to_sdxl_single_file_state(unet, vae, text_encoder, text_encoder_2) -> dict[str, torch.Tensor]:
    """The four SDXL modules' weights as one original-layout state dict (sharing their memory)."""
    state = _rename(unet.state_dict(), _unet_rules(unet.config) + _MICRO_CONDITIONING, UNET_PREFIX, "UNet")
    vae_state = _rename(vae.state_dict(), _vae_rules(vae.config), VAE_PREFIX, "VAE")
    state.update({key: _as_conv_1x1(key, tensor) for key, tensor in vae_state.items()})
    first = _rename_text_encoder(text_encoder.state_dict())
    state.update({FIRST_TEXT_PREFIX + key.split("text_model.", 1)[1]: t for key, t in first.items()})
    state.update(sdxl_openclip_state(text_encoder_2, SECOND_TEXT_PREFIX))
    return state
