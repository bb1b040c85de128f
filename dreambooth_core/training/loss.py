"""The DreamBooth objective over a batch: the instance loss plus the weighted prior-preservation term.

Each example's own loss (what the denoiser should have predicted) is its family's objective
(dreambooth_core/families/objectives.py).
"""

from __future__ import annotations

import torch


def dreambooth_loss(per_example: torch.Tensor, instances: int, prior_weight: float) -> torch.Tensor:
    """Instance examples first, then their class examples (the prior-preservation term)."""
    loss = per_example[:instances].mean()
    if per_example.shape[0] > instances:
        loss = loss + prior_weight * per_example[instances:].mean()
    return loss
