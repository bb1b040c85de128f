"""The base model with trained weights applied, for export and samples: a checkpoint's, or the
trainer's in memory (the same values, without reading them back)."""

from __future__ import annotations

import safetensors.torch
import torch

from dreambooth_core.config import TrainingSettings
from dreambooth_core.session.checkpoints import Checkpoint
from dreambooth_core.training.methods import Trainables, set_up_method
from dreambooth_core.families.family import ModelParts
from dreambooth_core.families import load_model_parts
from dreambooth_core.training.trainer import EMA_FILE, WEIGHTS_FILE, Trainer

Weights = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]  # trained values, and EMA's or None


def checkpoint_weights(checkpoint: Checkpoint, use_ema: bool = True) -> Weights:
    averaged = use_ema and EMA_FILE in checkpoint.files
    return (safetensors.torch.load(checkpoint.files[WEIGHTS_FILE]),
            safetensors.torch.load(checkpoint.files[EMA_FILE]) if averaged else None)


def trainer_weights(trainer: Trainer) -> Weights:
    """What the trainer's checkpoint at this step holds (weights.safetensors, ema.safetensors), on the CPU."""
    def cpu(tensors):
        return {name: value.detach().to("cpu") for name, value in tensors.items()}

    return cpu(trainer.trainables.named()), cpu(trainer.ema) if trainer.ema is not None else None


def restored_parts(model_path: str, settings: TrainingSettings, subjects: list[str], checkpoint: Checkpoint,
                   device: torch.device, use_ema: bool = True) -> tuple[ModelParts, Trainables]:
    """Load the base model, set up the method's trainables, and copy the checkpoint's
    values in; with EMA on, the UNet gets the averaged weights."""
    return parts_with(model_path, settings, subjects, checkpoint_weights(checkpoint, use_ema), device)


@torch.no_grad()
def parts_with(model_path: str, settings: TrainingSettings, subjects: list[str], weights: Weights,
               device: torch.device) -> tuple[ModelParts, Trainables]:
    """The base model with the method's trainables set to `weights` (EMA's, when given, for the denoiser)."""
    parts = load_model_parts(model_path, device)
    trainables = set_up_method(parts, settings, subjects)  # the initial values are overwritten
    values, averaged = weights
    if averaged is not None:
        values = values | {f"{trainables.denoiser_name}.{name}": value for name, value in averaged.items()}
    for name, parameter in trainables.named().items():
        parameter.copy_(values[name])
    parts.denoiser.requires_grad_(False).eval()
    for encoder in parts.text_encoders:
        encoder.requires_grad_(False).eval()
    return parts, trainables
