"""The trained UNet (and text encoder, when the checkpoint holds one) of a committed checkpoint,
loaded for rendering: straight into the inference precision, on the rendering device.

Only those files are read (not the optimizer state, twice the UNet's size), each
checked against the checkpoint's manifest."""

from __future__ import annotations

import hashlib

import safetensors.torch
import torch

from tasks.errors import SessionError
from tasks.generation.pipeline import inference_dtype
from tasks.session import Session
from tasks.training.checkpoint import MANIFEST, step_folder
from tasks.training.trainer import UNET_FILE

# The file a checkpoint would hold the trained text encoder in (absent: the base one is used).
TEXT_ENCODER_FILE = "text_encoder.safetensors"


def load_trained_modules(session: Session, model_path: str, step: int, device: torch.device
                         ) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """(UNet, text encoder or None) of the committed checkpoint at `step`."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    files = _manifest_files(session, step)
    dtype = inference_dtype(device)
    unet = UNet2DConditionModel.from_pretrained(model_path, subfolder="unet", torch_dtype=dtype)
    unet.load_state_dict(_tensors(session, step, files, UNET_FILE))
    text_encoder = None
    if TEXT_ENCODER_FILE in files:
        text_encoder = CLIPTextModel.from_pretrained(model_path, subfolder="text_encoder", dtype=dtype)
        text_encoder.load_state_dict(_tensors(session, step, files, TEXT_ENCODER_FILE))
        text_encoder = text_encoder.to(device).requires_grad_(False).eval()
    return unet.to(device).requires_grad_(False).eval(), text_encoder


def _manifest_files(session: Session, step: int) -> dict[str, dict]:
    manifest = f"{step_folder(step)}/{MANIFEST}"
    if not session.exists(manifest):
        raise SessionError(f"session {session.name!r} has no committed checkpoint at step {step} to "
                           "render samples from. Train to that step first.")
    return session.read_json(manifest)["files"]


def _tensors(session: Session, step: int, files: dict[str, dict], name: str) -> dict[str, torch.Tensor]:
    data = session.read_bytes(f"{step_folder(step)}/{name}")
    if hashlib.sha256(data).hexdigest() != files[name]["sha256"]:
        raise SessionError(f"{session.url}/{step_folder(step)}/{name} does not match its checkpoint "
                           "manifest (a damaged file). Render samples from another step, or train again "
                           "from the previous checkpoint.")
    return safetensors.torch.load(data)
