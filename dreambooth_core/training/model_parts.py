"""Loading the parts of a diffusers Stable Diffusion folder that training needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from dreambooth_core.model.family import has_second_text_encoder


@dataclass
class ModelParts:
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    noise_scheduler: object
    text_encoder_2: torch.nn.Module | None = None  # SDXL's second (OpenCLIP) encoder
    tokenizer_2: object | None = None

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        return [e for e in (self.text_encoder, self.text_encoder_2) if e is not None]

    def to(self, device: torch.device) -> None:
        """Moves every module that is not on `device` yet (one already there is left alone)."""
        for module in (self.unet, self.vae, *self.text_encoders):
            if next(module.parameters()).device != device:
                module.to(device)


def import_model_classes() -> Iterator[str]:
    """Import what load_model_parts needs, a library at a time (seconds in all, on a CPU):
    the caller may stop between any two, e.g. when what it waited for is ready."""
    from transformers import CLIPTokenizer  # noqa: F401

    yield "CLIPTokenizer"
    from transformers import CLIPTextModel  # noqa: F401

    yield "CLIPTextModel"
    from diffusers import UNet2DConditionModel  # noqa: F401

    yield "UNet2DConditionModel"
    from diffusers import AutoencoderKL, DDPMScheduler  # noqa: F401

    yield "AutoencoderKL"


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
    if has_second_text_encoder(model_path):  # SDXL
        from transformers import CLIPTextModelWithProjection

        parts.text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(model_path, subfolder="text_encoder_2")
        parts.tokenizer_2 = CLIPTokenizer.from_pretrained(model_path, subfolder="tokenizer_2")
    # fp32 master weights whatever the folder stores (a session's own fp16 export, for one).
    for module in (parts.unet, parts.vae, *parts.text_encoders):
        module.to(device=device, dtype=torch.float32)
    parts.vae.requires_grad_(False).eval()
    for encoder in parts.text_encoders:
        encoder.requires_grad_(False).eval()
    return parts
