"""VAE posteriors of training images, computed once per image and flip."""

from __future__ import annotations

import torch


class LatentCache:
    """(mean, std) of each image's latent distribution. Each image is encoded
    alone, so a cached value equals what encoding it at that step would give."""

    def __init__(self, vae: torch.nn.Module, enabled: bool = True):
        self.vae, self.enabled, self._stored = vae, enabled, {}
        self.device = next(vae.parameters()).device

    def posterior(self, key: tuple, pixels: torch.Tensor, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        key = (*key, flip)
        if key in self._stored:
            return self._stored[key]
        value = self._encode(pixels.flip(-1) if flip else pixels)
        if self.enabled:
            self._stored[key] = value
        return value

    @torch.no_grad()
    def _encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.vae.encode(pixels.to(self.device, torch.float32)).latent_dist
        return dist.mean, dist.std
