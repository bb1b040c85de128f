"""Activations recomputed in the backward pass instead of kept (--gradient-checkpointing).

diffusers checkpoints the UNet's blocks whatever the module's mode. transformers checkpoints a
text encoder's layers only while each layer is in training mode, and training mode also turns on
the attention dropout of the layers' children; the encoders train in eval mode, so
`gradient_checkpointing_enable` alone never checkpoints them. Here the layers that checkpoint are
flagged as training one by one (not recursively): they checkpoint, their children stay in eval
mode, so dropout stays off and what is computed is what an unchecked encoder computes.
"""

from __future__ import annotations

import torch

from dreambooth_core.families.family import ModelParts

# Non-reentrant checkpointing computes gradients for weights inside a layer even when the layer's
# input needs none (LoRA adapters behind a frozen embedding); the reentrant kind would not.
CHECKPOINT_KWARGS = {"use_reentrant": False}


def checkpoint_activations(parts: ModelParts, text_encoders_train: bool) -> None:
    parts.denoiser.enable_gradient_checkpointing()
    if text_encoders_train:
        for encoder in parts.text_encoders:
            checkpoint_text_encoder(encoder)


def checkpoint_text_encoder(encoder: torch.nn.Module) -> None:
    enable = getattr(encoder, "activation_checkpointing_enable", None)  # transformers 5
    if enable is not None:
        enable(activation_checkpointing_kwargs=CHECKPOINT_KWARGS)
    else:
        encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINT_KWARGS)
    for module in encoder.modules():
        if getattr(module, "gradient_checkpointing", False):
            module.training = True  # this module only: see the module's docstring
