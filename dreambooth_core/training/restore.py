"""The base model with a checkpoint's trained weights applied, for export and samples."""

from __future__ import annotations

import safetensors.torch
import torch

from dreambooth_core.config import TrainingSettings
from dreambooth_core.session.checkpoints import Checkpoint
from dreambooth_core.training.methods import Trainables, set_up_method
from dreambooth_core.families.family import ModelParts
from dreambooth_core.families import load_model_parts
from dreambooth_core.training.trainer import EMA_FILE, WEIGHTS_FILE


@torch.no_grad()
def restored_parts(model_path: str, settings: TrainingSettings, subjects: list[str], checkpoint: Checkpoint,
                   device: torch.device, use_ema: bool = True) -> tuple[ModelParts, Trainables]:
    """Load the base model, set up the method's trainables, and copy the checkpoint's
    values in; with EMA on, the UNet gets the averaged weights."""
    parts = load_model_parts(model_path, device)
    trainables = set_up_method(parts, settings, subjects)  # the initial values are overwritten
    weights = safetensors.torch.load(checkpoint.files[WEIGHTS_FILE])
    if use_ema and EMA_FILE in checkpoint.files:
        averaged = safetensors.torch.load(checkpoint.files[EMA_FILE])
        weights |= {f"{trainables.denoiser_name}.{name}": value for name, value in averaged.items()}
    for name, parameter in trainables.named().items():
        parameter.copy_(weights[name])
    parts.denoiser.requires_grad_(False).eval()
    for encoder in parts.text_encoders:
        encoder.requires_grad_(False).eval()
    return parts, trainables
