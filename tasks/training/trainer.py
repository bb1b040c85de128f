"""The UNet training step and the state that makes it resumable."""

from __future__ import annotations

import io
from dataclasses import dataclass

import safetensors.torch
import torch
import torch.nn.functional as F

from tasks.training.checkpoint import Checkpoint, Writer, read_tensor_file
from tasks.training.model_parts import ModelParts
from tasks.training.randomness import balanced_example_index, generator_for

UNET_FILE = "unet.safetensors"
OPTIMIZER_FILE = "optimizer.pt"


@dataclass(frozen=True)
class Example:
    pixels: torch.Tensor  # [1, 3, H, W] in [-1, 1]
    caption: str
    subject: str = ""


@dataclass(frozen=True)
class Hyperparameters:
    seed: int
    learning_rate: float
    max_grad_norm: float


class UNetTrainer:
    """Fine-tunes the UNet; the VAE and text encoder stay frozen."""

    def __init__(self, parts: ModelParts, examples: list[Example], hp: Hyperparameters):
        self.parts, self.examples, self.hp = parts, examples, hp
        self.device = next(parts.unet.parameters()).device
        parts.unet.train().requires_grad_(True)
        self.optimizer = torch.optim.AdamW(parts.unet.parameters(), lr=hp.learning_rate, weight_decay=1e-2)
        self.embeddings = {e.caption: self._encode(e.caption) for e in examples}
        self.groups = subject_groups(examples)

    @torch.no_grad()
    def _encode(self, caption: str) -> torch.Tensor:
        tokenizer = self.parts.tokenizer
        ids = tokenizer(caption, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        return self.parts.text_encoder(ids.to(self.device))[0]

    def loss(self, step: int) -> torch.Tensor:
        example = self.examples[balanced_example_index(self.hp.seed, step, self.groups)]
        draw = generator_for(self.hp.seed, step, "noise")
        latents = self._sample_latents(example.pixels, draw)
        noise = torch.randn(latents.shape, generator=draw).to(self.device)
        scheduler = self.parts.noise_scheduler
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  generator=draw).to(self.device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        if scheduler.config.prediction_type == "v_prediction":
            target = scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        prediction = self.parts.unet(noisy, timesteps, self.embeddings[example.caption]).sample
        return F.mse_loss(prediction.float(), target.float())

    @torch.no_grad()
    def _sample_latents(self, pixels: torch.Tensor, draw: torch.Generator) -> torch.Tensor:
        posterior = self.parts.vae.encode(pixels.to(self.device)).latent_dist
        eps = torch.randn(posterior.mean.shape, generator=draw).to(self.device)
        return (posterior.mean + posterior.std * eps) * self.parts.vae.config.scaling_factor

    def step(self, step: int) -> torch.Tensor:
        """One optimisation step; returns the loss without a host-device sync."""
        loss = self.loss(step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parts.unet.parameters(), self.hp.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def state_writers(self) -> dict[str, Writer]:
        unet = {k: v.detach().cpu().contiguous() for k, v in self.parts.unet.state_dict().items()}
        optimizer = self.optimizer.state_dict()
        return {
            UNET_FILE: lambda f: f.write(safetensors.torch.save(unet)),
            OPTIMIZER_FILE: lambda f: torch.save(optimizer, f),
        }

    def load_state(self, checkpoint: Checkpoint) -> None:
        unet = safetensors.torch.load(checkpoint.files[UNET_FILE])
        self.parts.unet.load_state_dict(unet, strict=True)
        self.optimizer.load_state_dict(read_tensor_file(checkpoint.files[OPTIMIZER_FILE]))


def subject_groups(examples: list[Example]) -> list[list[int]]:
    """Example indices per subject, subjects in sorted order."""
    subjects = sorted({e.subject for e in examples})
    return [[i for i, e in enumerate(examples) if e.subject == s] for s in subjects]


def load_unet_weights(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    return safetensors.torch.load(checkpoint.files[UNET_FILE])


def pixels_from_png(data: bytes) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    array = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0) / 127.5 - 1.0
