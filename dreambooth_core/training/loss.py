"""The DreamBooth objective: denoising loss, optional min-SNR weighting, prior term."""

from __future__ import annotations

import torch


def signal_to_noise(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    alpha_bar = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alpha_bar / (1.0 - alpha_bar)


def per_example_loss(prediction: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor,
                     alphas_cumprod: torch.Tensor, prediction_type: str,
                     min_snr_gamma: float) -> torch.Tensor:
    """Mean squared error per example, weighted by min(SNR, gamma) when gamma > 0.

    The min-SNR weight is min(SNR, gamma) / SNR for an epsilon target and
    min(SNR, gamma) / (SNR + 1) for a v target (Hang et al., 2023)."""
    error = (prediction.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
    if min_snr_gamma <= 0:
        return error
    snr = signal_to_noise(alphas_cumprod, timesteps)
    clipped = torch.clamp(snr, max=min_snr_gamma)
    weight = clipped / (snr + 1.0) if prediction_type == "v_prediction" else clipped / snr
    return error * weight


def dreambooth_loss(per_example: torch.Tensor, instances: int, prior_weight: float) -> torch.Tensor:
    """Instance examples first, then their class examples (the prior-preservation term)."""
    loss = per_example[:instances].mean()
    if per_example.shape[0] > instances:
        loss = loss + prior_weight * per_example[instances:].mean()
    return loss
