"""The trained UNet (and text encoder, when the checkpoint holds one) of a committed checkpoint,
loaded for rendering: straight into the inference precision, on the rendering device."""

from __future__ import annotations

import safetensors.torch
import torch

from tasks.errors import SessionError
from tasks.generation.pipeline import inference_dtype
from tasks.session import Session
from tasks.training.checkpoint import CheckpointStore
from tasks.training.trainer import UNET_FILE

# The file a checkpoint would hold the trained text encoder in (absent: the base one is used).
TEXT_ENCODER_FILE = "text_encoder.safetensors"


def load_trained_modules(session: Session, model_path: str, step: int, device: torch.device
                         ) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """(UNet, text encoder or None) of the committed checkpoint at `step`."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    checkpoint = CheckpointStore(session).load_latest(max_step=step)
    if checkpoint is None or checkpoint.step != step:
        raise SessionError(f"session {session.name!r} has no committed checkpoint at step {step} to "
                           "render samples from. Train to that step first.")
    dtype = inference_dtype(device)
    unet = UNet2DConditionModel.from_pretrained(model_path, subfolder="unet", torch_dtype=dtype)
    unet.load_state_dict(safetensors.torch.load(checkpoint.files[UNET_FILE]))
    text_encoder = None
    if TEXT_ENCODER_FILE in checkpoint.files:
        text_encoder = CLIPTextModel.from_pretrained(model_path, subfolder="text_encoder", dtype=dtype)
        text_encoder.load_state_dict(safetensors.torch.load(checkpoint.files[TEXT_ENCODER_FILE]))
        text_encoder = text_encoder.to(device).requires_grad_(False).eval()
    return unet.to(device).requires_grad_(False).eval(), text_encoder
