"""What a denoiser is trained to predict, from clean latents and noise: the training objective.

- `DiffusionObjective` (DDPM: SD 1.x, 2.x, SDXL): an integer timestep t drawn uniformly, the
  scheduler's noisy latents, and the target the model predicts: the noise (epsilon) or the
  velocity (v-prediction). Optional min-SNR weighting (Hang et al., 2023): min(SNR, gamma) / SNR
  for an epsilon target, min(SNR, gamma) / (SNR + 1) for a v target.
- `FlowMatchingObjective` (rectified flow: FLUX and later families): a noise level sigma in (0, 1],
  the noisy latents (1 - sigma) x0 + sigma noise, and the target noise - x0 (the flow's velocity).

Every random draw comes from the step's generator, in a fixed order, so a resumed step draws
what an uninterrupted one drew (dreambooth_core/training/data/randomness.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import torch


@dataclass(frozen=True)
class NoisyBatch:
    noisy: torch.Tensor      # what the denoiser sees
    timesteps: torch.Tensor  # the noise level, in the units the denoiser takes it
    target: torch.Tensor     # what it should predict
    weights: torch.Tensor | None = None  # per example: the loss weighting, where there is one


class Objective(Protocol):
    def latents(self, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator,
                device: torch.device) -> torch.Tensor:
        """The clean latents the denoiser works in, from the VAE's posterior (mean, std)."""

    def noisy_batch(self, latents: torch.Tensor, noise: torch.Tensor, generator: torch.Generator,
                    device: torch.device) -> NoisyBatch: ...


def randn(shape, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Normal noise drawn on the CPU from the step's generator (the same on every device), then moved."""
    return torch.randn(shape, generator=generator).to(device)


def per_example_loss(prediction: torch.Tensor, batch: NoisyBatch,
                     pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per example, weighted where the objective weights it. `pixel_weights`
    ([batch, 1, h, w], --masked-loss): each example's weighted mean over its latent pixels instead,
    sum(w * error) / sum(w), so a small subject weighs as much as one that fills the frame."""
    squared = (prediction.float() - batch.target.float()).pow(2)
    dims = tuple(range(1, prediction.dim()))
    if pixel_weights is None:
        error = squared.mean(dim=dims)
    else:
        weights = pixel_weights.to(squared).expand_as(squared)
        error = (squared * weights).sum(dim=dims) / weights.sum(dim=dims)
    return error if batch.weights is None else error * batch.weights


@dataclass(frozen=True)
class DiffusionObjective:
    scheduler: object            # diffusers' DDPMScheduler (add_noise, get_velocity, alphas_cumprod)
    scaling_factor: float        # the VAE's
    prediction_type: Literal["epsilon", "v_prediction"]
    min_snr_gamma: float = 0.0

    def latents(self, mean, std, generator, device):
        return (mean + std * randn(mean.shape, generator, device)) * self.scaling_factor

    def noisy_batch(self, latents, noise, generator, device):
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  generator=generator).to(device)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        target = self.scheduler.get_velocity(latents, noise, timesteps) \
            if self.prediction_type == "v_prediction" else noise
        return NoisyBatch(noisy, timesteps, target, self._weights(timesteps))

    def _weights(self, timesteps: torch.Tensor) -> torch.Tensor | None:
        if self.min_snr_gamma <= 0:
            return None
        snr = signal_to_noise(self.scheduler.alphas_cumprod, timesteps)
        clipped = torch.clamp(snr, max=self.min_snr_gamma)
        return clipped / (snr + 1.0) if self.prediction_type == "v_prediction" else clipped / snr


def signal_to_noise(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    alpha_bar = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alpha_bar / (1.0 - alpha_bar)


@dataclass(frozen=True)
class FlowMatchingObjective:
    """Noise levels drawn logit-normal (the sigmoid of a standard normal: the reference trainers'
    choice for fine-tuning), then shifted as the model's scheduler shifts them when it renders:
    by a static `shift` (sigma' = s sigma / (1 + (s - 1) sigma)), or, where the scheduler shifts by
    image size (`dynamic`), by mu interpolated between (base_seq_len, base_shift) and (max_seq_len,
    max_shift) in the image's token count (sigma' = e^mu / (e^mu + 1/sigma - 1)). The denoiser is
    told sigma as its timestep. `patch`: latent pixels per side of one token."""

    shift: float = 1.0
    dynamic: tuple[int, int, float, float] | None = None  # base_seq_len, max_seq_len, base_shift, max_shift
    patch: int = 1
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    sample_latents: bool = True  # FLUX.1 samples the posterior; others take its mean

    def latents(self, mean, std, generator, device):
        sampled = mean + std * randn(mean.shape, generator, device) if self.sample_latents else mean
        return (sampled - self.shift_factor) * self.scaling_factor

    def noisy_batch(self, latents, noise, generator, device):
        sigma = self.shifted(torch.sigmoid(torch.randn(latents.shape[0], generator=generator)),
                             latents.shape[-2] * latents.shape[-1] // self.patch ** 2).to(device)
        expanded = sigma.view(-1, *([1] * (latents.dim() - 1)))
        noisy = (1 - expanded) * latents + expanded * noise
        return NoisyBatch(noisy.to(latents.dtype), sigma, noise - latents)

    def shifted(self, sigma: torch.Tensor, tokens: int) -> torch.Tensor:
        if self.dynamic is not None:
            base_len, max_len, base_shift, max_shift = self.dynamic
            mu = base_shift + (max_shift - base_shift) * (tokens - base_len) / (max_len - base_len)
            return math.exp(mu) / (math.exp(mu) + 1 / sigma - 1)
        return self.shift * sigma / (1 + (self.shift - 1) * sigma) if self.shift != 1.0 else sigma


def flow_objective(scheduler_config, patch: int, scaling_factor: float = 1.0, shift_factor: float = 0.0,
                   sample_latents: bool = True) -> FlowMatchingObjective:
    """The flow objective for a FlowMatchEulerDiscreteScheduler's config (its shift, static or by size)."""
    dynamic = None
    if scheduler_config.get("use_dynamic_shifting"):
        dynamic = (scheduler_config.get("base_image_seq_len", 256),
                   scheduler_config.get("max_image_seq_len", 4096),
                   scheduler_config.get("base_shift", 0.5), scheduler_config.get("max_shift", 1.15))
    return FlowMatchingObjective(float(scheduler_config.get("shift", 1.0)), dynamic, patch, scaling_factor,
                                 shift_factor, sample_latents)
