"""A Stable Diffusion pipeline for rendering, built from the base model's local folder.

Trained modules (UNet, text encoder, a tokenizer with a learnt token) may stand in
for the base model's own. They are used as they are, never copied, moved or cast:
on CUDA the base parts load in fp16 and rendering runs under fp16 autocast, so
fp32 trained weights work beside them without a second copy in GPU memory; on the
CPU autocast (bf16) is on only when a given module holds bf16 weights (LoRA and
textual inversion trained under bf16, see training/frozen_weights.py).

The VAE decodes outside autocast, in its own precision: fp16 on CUDA, except for a
VAE whose config says `force_upcast` (SDXL's, which overflows in fp16 into black
images), loaded in fp32.

The scheduler is always DPM-Solver++ (2M), whatever the folder names: it adds no
noise between steps, so the images depend only on the weights, the prompt and
the starting noise, and it gives good images in 20-25 steps.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from PIL import Image

from dreambooth_core.config import DEFAULT_GUIDANCE_SCALE, DEFAULT_INFERENCE_STEPS
from dreambooth_core.model.family import has_second_text_encoder

DEFAULT_STEPS = DEFAULT_INFERENCE_STEPS
DEFAULT_GUIDANCE = DEFAULT_GUIDANCE_SCALE
SCHEDULER = "DPMSolverMultistepScheduler"


def inference_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


def build_pipeline(model_path: str, device: torch.device | str, unet: torch.nn.Module | None = None,
                   text_encoder: torch.nn.Module | None = None, tokenizer=None,
                   text_encoder_2: torch.nn.Module | None = None):
    """A StableDiffusionPipeline (StableDiffusionXLPipeline for an SDXL folder) on `device`:
    safety checker and progress bar off.

    Given modules must already be on `device`; the others load from `model_path`."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    device = torch.device(device)
    dtype = inference_dtype(device)
    for name, module in (("unet", unet), ("text_encoder", text_encoder), ("text_encoder_2", text_encoder_2)):
        if module is not None and _device_of(module).type != device.type:
            raise ValueError(f"the given {name} is on {_device_of(module)}, not on {device}")

    def load(kind, subfolder: str, dtype_name: str, dtype: torch.dtype = dtype):
        module = kind.from_pretrained(model_path, subfolder=subfolder, **{dtype_name: dtype})
        return module.to(device).requires_grad_(False).eval()

    upcast = AutoencoderKL.load_config(model_path, subfolder="vae").get("force_upcast", False)
    parts = dict(
        vae=_decoding_in_own_precision(load(AutoencoderKL, "vae", "torch_dtype", torch.float32 if upcast else dtype)),
        text_encoder=text_encoder if text_encoder is not None else load(CLIPTextModel, "text_encoder", "dtype"),
        tokenizer=tokenizer if tokenizer is not None else CLIPTokenizer.from_pretrained(model_path, subfolder="tokenizer"),
        unet=unet if unet is not None else load(UNet2DConditionModel, "unet", "torch_dtype"),
        scheduler=DPMSolverMultistepScheduler.from_pretrained(model_path, subfolder="scheduler"))
    if has_second_text_encoder(model_path):
        from diffusers import StableDiffusionXLPipeline
        from transformers import CLIPTextModelWithProjection

        pipeline = StableDiffusionXLPipeline(
            **parts, tokenizer_2=CLIPTokenizer.from_pretrained(model_path, subfolder="tokenizer_2"),
            text_encoder_2=text_encoder_2 if text_encoder_2 is not None else load(
                CLIPTextModelWithProjection, "text_encoder_2", "dtype"))
    else:
        from diffusers import StableDiffusionPipeline

        pipeline = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def render(pipeline, prompt: str, generators: list[torch.Generator], resolution: int,
           steps: int = DEFAULT_STEPS, guidance_scale: float = DEFAULT_GUIDANCE,
           negative_prompt: str | None = None, size: tuple[int, int] | None = None) -> list[Image.Image]:
    """One image per generator (each image's starting noise comes from its own generator),
    `resolution` square unless `size` (width, height) is given."""
    device = _device_of(pipeline.unet)
    width, height = size or (resolution, resolution)
    encoders = [e for e in (pipeline.text_encoder, getattr(pipeline, "text_encoder_2", None)) if e is not None]
    autocast = _autocast_dtype(device, pipeline.unet, *encoders)
    with _evaluating(pipeline.unet, *encoders), torch.no_grad(), \
            torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        return pipeline(prompt, num_images_per_prompt=len(generators), generator=generators,
                        num_inference_steps=steps, guidance_scale=guidance_scale,
                        negative_prompt=negative_prompt or None, height=height, width=width,
                        output_type="pil").images


def _autocast_dtype(device: torch.device, *modules: torch.nn.Module) -> torch.dtype | None:
    if device.type == "cuda":
        return torch.float16
    held = any(p.dtype == torch.bfloat16 for m in modules for p in m.parameters())
    return torch.bfloat16 if held else None


def _decoding_in_own_precision(vae):
    """The pipelines call `vae.decode` inside the caller's autocast, which would run an fp32 VAE's
    convolutions in fp16 again: this instance's decode leaves autocast and takes latents of any dtype."""
    decode = vae.decode

    def decode_outside_autocast(latents: torch.Tensor, *args, **kwargs):
        with torch.autocast(latents.device.type, enabled=False):
            return decode(latents.to(vae.dtype), *args, **kwargs)

    vae.decode = decode_outside_autocast
    return vae


@contextmanager
def _evaluating(*modules: torch.nn.Module) -> Iterator[None]:
    """eval() while rendering (no dropout), the mode of each module and sub-module restored after
    (a text encoder trains with only its checkpointed layers in training mode)."""
    modes = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device
