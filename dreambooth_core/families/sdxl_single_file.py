"""SDXL weights in the original single-file layout (what AUTOMATIC1111, ComfyUI and
Stability AI's code load):

    model.diffusion_model.*                          the UNet, as SD's (single_file.py), plus its
                                                     micro-conditioning MLP as label_emb.0.{0,2}
    first_stage_model.*                              the VAE, as SD's
    conditioner.embedders.0.transformer.text_model.* the first text encoder (OpenAI CLIP), HF names
    conditioner.embedders.1.model.*                  the second (OpenCLIP), fused attention and
                                                     text_projection (openclip_layout.py)

Key names follow diffusers' scripts/convert_diffusers_to_original_sdxl.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dreambooth_core.families.sd_openclip_layout import sdxl_openclip_state
from dreambooth_core.families.sd_single_file import (
    UNET_PREFIX,
    VAE_PREFIX,
    _as_conv_1x1,
    _param,
    _rename,
    _rename_text_encoder,
    _unet_rules,
    _vae_rules,
)

if TYPE_CHECKING:
    import torch

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
