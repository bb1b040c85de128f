"""Rendering prompts with a model's pipeline, built from the base model's local folder by its family
(dreambooth_core/families/rendering.py says how trained modules stand in for the folder's own).

On the CPU autocast (bf16) is on only when a given module holds bf16 weights (LoRA and textual
inversion trained under bf16, see training/memory/frozen_weights.py). Each family's pipeline uses a
scheduler that adds no noise between steps, so the images depend only on the weights, the prompt
and the starting noise. Without a GPU, a full-size model renders slowly: the expected time is told
before rendering starts (below).
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Iterator

import torch
from PIL import Image

from dreambooth_core.config import DEFAULT_GUIDANCE_SCALE, DEFAULT_INFERENCE_STEPS
from dreambooth_core.families import ModelParts, family_of_folder
from dreambooth_core.reports.timing import estimate_text

DEFAULT_STEPS = DEFAULT_INFERENCE_STEPS
DEFAULT_GUIDANCE = DEFAULT_GUIDANCE_SCALE


def build_pipeline(model_path: str, device: torch.device | str, trained: ModelParts | None = None):
    """The model's pipeline on `device` (its family's: safety checker and progress bar off).

    With `trained`, its denoiser, text encoders and tokenizers take the place of the folder's own;
    they must be on `device` already. The VAE and scheduler load from `model_path`."""
    device = torch.device(device)
    if trained is not None:
        for module in (trained.denoiser, *trained.text_encoders):
            if _device_of(module).type != device.type:
                raise ValueError(f"the given {type(module).__name__} is on {_device_of(module)}, "
                                 f"not on {device}")
    pipeline = family_of_folder(model_path).pipeline(model_path, device, trained)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def render(pipeline, prompt: str, generators: list[torch.Generator], resolution: int,
           steps: int = DEFAULT_STEPS, guidance_scale: float = DEFAULT_GUIDANCE,
           negative_prompt: str | None = None, size: tuple[int, int] | None = None) -> list[Image.Image]:
    """One image per generator (each image's starting noise comes from its own generator),
    `resolution` square unless `size` (width, height) is given."""
    denoiser = denoiser_of(pipeline)
    device = _device_of(denoiser)
    width, height = size or (resolution, resolution)
    encoders = [e for e in (pipeline.text_encoder, getattr(pipeline, "text_encoder_2", None))
                if e is not None]
    autocast = _autocast_dtype(device, denoiser, *encoders)
    with _evaluating(denoiser, *encoders), torch.no_grad(), \
            torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        return pipeline(prompt=prompt, num_images_per_prompt=len(generators), generator=generators,
                        num_inference_steps=steps, guidance_scale=guidance_scale, height=height, width=width,
                        output_type="pil", **_negative(pipeline, negative_prompt)).images


def _negative(pipeline, negative_prompt: str | None) -> dict:
    """The negative prompt where the pipeline takes one (FLUX.2 [klein]'s guides away from the empty
    prompt only)."""
    if "negative_prompt" in inspect.signature(pipeline.__call__).parameters:
        return {"negative_prompt": negative_prompt or None}
    return {}


def denoiser_of(pipeline) -> torch.nn.Module:
    return getattr(pipeline, "unet", None) or pipeline.transformer


def _autocast_dtype(device: torch.device, *modules: torch.nn.Module) -> torch.dtype | None:
    if device.type == "cuda":
        return torch.float16
    held = any(p.dtype == torch.bfloat16 for m in modules for p in m.parameters())
    return torch.bfloat16 if held else None


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


# How long rendering takes without a GPU, to warn before it starts.
#
# Measured with `benchmarks/render_speed.py --model sd15 --device cpu` on the development VM
# (2 cores, torch 2.13 CPU build; BENCHMARKS.md): each denoising step of a 512 px image
# (with classifier-free guidance, two UNet passes) takes 13.8 s, and the prompt's encoding
# and the VAE decode 15 s more. Larger images cost about in proportion to their pixels.

CPU_SECONDS_PER_STEP_512 = 13.8
CPU_SECONDS_PER_IMAGE_512 = 15.0
MEASURED_ON = "a 2-core CPU"


def cpu_render_seconds(images: int, inference_steps: int, resolution: int) -> float:
    """Seconds to render `images` images of a full-size SD 1.x/2.x model on the CPU, about."""
    scale = (resolution / 512) ** 2
    return images * (inference_steps * CPU_SECONDS_PER_STEP_512 + CPU_SECONDS_PER_IMAGE_512) * scale


def cpu_render_warning(model: str, images: int, inference_steps: int, resolution: int) -> str | None:
    """The warning for rendering on the CPU; None for the built-in tiny models (seconds)."""
    if model.startswith("tiny"):
        return None
    seconds = cpu_render_seconds(images, inference_steps, resolution)
    return (f"no CUDA GPU: rendering {images} image(s) of {inference_steps} steps at {resolution} px with "
            f"{model} on the CPU takes about {estimate_text(seconds)} (measured on {MEASURED_ON}: "
            f"{CPU_SECONDS_PER_STEP_512:.1f} s per step at 512 px; benchmarks/render_speed.py). "
            "A GPU renders each image in seconds; fewer images or --inference-steps shorten it.")
