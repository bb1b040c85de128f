"""The weights a run never trains, held in the autocast precision.

LoRA and textual inversion train a few million numbers beside a model that stays
as it is; UNet-only DreamBooth leaves the text encoders as they are. Under
autocast the matrix products (linear, convolution) run in fp16/bf16 whatever
their weights are stored in, so holding those weights, and the embedding tables,
in that precision halves their memory (SDXL LoRA: 13 GiB -> 6.5 GiB) without
changing what is computed, as diffusers' and kohya's LoRA scripts do. Norm
layers keep their few fp32 parameters: autocast runs them in fp32. What trains
stays fp32, and exports start again from the base model's own weights.

The VAE is left in fp32: SDXL's overflows in fp16, and it only encodes each
training image once (latents are cached).

--base-precision bf16/fp16 names the half precision outright; a quantised base
(families/quantised.py) keeps its quantised weights as the library holds them and
its other layers as above.
"""

from __future__ import annotations

from typing import Iterable

import torch

from dreambooth_core.families.quantised import is_quantised_weight

HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}
HELD_IN_HALF = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Embedding)


def frozen_dtype(precision: str, base_precision: str = "auto") -> torch.dtype:
    """What untrained weights are held in under autocast `precision` ("no", "fp16", "bf16"), or in
    the half precision --base-precision names."""
    return HALF.get(base_precision) or HALF.get(precision, torch.float32)


def hold_frozen(modules: Iterable[torch.nn.Module], trained: Iterable[torch.nn.Parameter],
                dtype: torch.dtype) -> None:
    """Casts, in place, the weights of the linear, convolution and embedding layers of `modules`
    that are not in `trained` and not quantised to `dtype` (the Parameter objects stay, so optimizers
    and adapters keep theirs)."""
    if dtype == torch.float32:
        return
    keep = {id(p) for p in trained}
    for module in modules:
        for layer in module.modules():
            if not isinstance(layer, HELD_IN_HALF):
                continue
            for parameter in layer.parameters(recurse=False):
                if id(parameter) in keep or is_quantised_weight(parameter):
                    continue
                if parameter.dtype != dtype:
                    parameter.data = parameter.data.to(dtype)
