"""Loading the parts of a diffusers Stable Diffusion folder that training needs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class ModelParts:
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    noise_scheduler: object


def native_resolution(model_path: str) -> int:
    """Image size the base model was trained at: UNet sample size x VAE downscale."""
    unet = json.loads((Path(model_path) / "unet" / "config.json").read_text())
    vae = json.loads((Path(model_path) / "vae" / "config.json").read_text())
    return unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_model_parts(model_path: str, device: torch.device) -> ModelParts:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    parts = ModelParts(
        unet=UNet2DConditionModel.from_pretrained(model_path, subfolder="unet"),
        vae=AutoencoderKL.from_pretrained(model_path, subfolder="vae"),
        text_encoder=CLIPTextModel.from_pretrained(model_path, subfolder="text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(model_path, subfolder="tokenizer"),
        noise_scheduler=DDPMScheduler.from_pretrained(model_path, subfolder="scheduler"),
    )
    for module in (parts.unet, parts.vae, parts.text_encoder):
        module.to(device)
    parts.vae.requires_grad_(False).eval()
    parts.text_encoder.requires_grad_(False).eval()
    return parts
