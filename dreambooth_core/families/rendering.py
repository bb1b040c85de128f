"""What every family's pipeline is built from: modules loaded for inference beside trained ones.

Trained modules (denoiser, text encoders, a tokenizer with a learnt token) may stand in for the
base model's own. They are used as they are, never copied, moved or cast: on CUDA the base parts
load in fp16 and rendering runs under fp16 autocast, so fp32 trained weights work beside them
without a second copy in GPU memory.

The VAE decodes outside autocast, in its own precision: fp16 on CUDA, except for a VAE whose
config says `force_upcast` (SDXL's and FLUX's, which overflow in fp16), loaded in fp32.
"""

from __future__ import annotations

from pathlib import Path

import torch


def inference_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


def load_for_inference(kind, model_path: str | Path, subfolder: str, device: torch.device,
                       dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A frozen module of the folder on `device`, in `dtype` (default: the device's inference dtype)."""
    dtype = dtype or inference_dtype(device)
    # diffusers, transformers
    options = {"torch_dtype": dtype} if hasattr(kind, "load_config") else {"dtype": dtype}
    module = kind.from_pretrained(model_path, subfolder=subfolder, **options)
    return module.to(device).requires_grad_(False).eval()


def load_vae(kind, model_path: str | Path, device: torch.device) -> torch.nn.Module:
    upcast = kind.load_config(model_path, subfolder="vae").get("force_upcast", False)
    vae = load_for_inference(kind, model_path, "vae", device, torch.float32 if upcast else None)
    return decoding_in_own_precision(vae)


def decoding_in_own_precision(vae):
    """The pipelines call `vae.decode` inside the caller's autocast, which would run an fp32 VAE's
    convolutions in fp16 again: this instance's decode leaves autocast and takes latents of any dtype."""
    decode = vae.decode

    def decode_outside_autocast(latents: torch.Tensor, *args, **kwargs):
        with torch.autocast(latents.device.type, enabled=False):
            return decode(latents.to(vae.dtype), *args, **kwargs)

    vae.decode = decode_outside_autocast
    return vae
