"""What a quantised frozen base holds, counted as the quantisation libraries lay it out.

Which layers are quantised follows diffusers' and transformers' bitsandbytes integrations
(`replace_with_bnb_linear`, whose rules kept_unquantised applies): every `nn.Linear` of the
denoiser and the text encoders, except the modules a model keeps in full precision
(`_keep_in_fp32_modules`: T5's `wo`), and for transformers models the ones
`get_keys_to_not_convert` names (tied and output embeddings, the last module). Norms,
embeddings, convolutions and biases stay as they are, and so does every weight that trains
(a LoRA's base layer is frozen, so it is quantised). Bytes per weight:

- nf4 (bitsandbytes 4-bit, double quantisation as in QLoRA): half a byte per weight; an absmax
  per block of 64 weights, itself quantised to one byte, with an fp32 scale per 256 of those
  blocks; two small code tables (16 and 256 fp32) and an fp32 offset.
- int8 (bitsandbytes LLM.int8) and fp8 (per-channel float8): one byte per weight and an fp32
  scale per output row.
- bf16 / fp16: two bytes.
The bias of a quantised layer keeps its dtype. A quantised layer computes with its weight
dequantised to the compute dtype, one layer at a time: the largest such copy is counted once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch

NF4_BLOCK, NESTED_BLOCK = 64, 256
LORA_BASE = ".base_layer"  # peft wraps a layer it adapts, and keeps the original under this name


def quantised_weight_bytes(numel: int, rows: int, precision: str) -> int:
    """Bytes a (rows x numel/rows) linear weight takes in `precision` ("nf4", "int8", "fp8", "bf16",
    "fp16")."""
    if precision == "nf4":
        blocks = -(-numel // NF4_BLOCK)
        return -(-numel // 2) + blocks + 4 * -(-blocks // NESTED_BLOCK) + 4 * (16 + 256 + 1)
    if precision in ("int8", "fp8"):
        return numel + 4 * rows
    if precision in ("bf16", "fp16"):
        return 2 * numel
    raise ValueError(f"no quantised layout for {precision!r}")


def kept_unquantised(model: torch.nn.Module) -> Callable[[str], bool]:
    """Whether the libraries leave the linear layer of this name in `model` unquantised: transformers'
    own rule (should_convert_module) for its models, diffusers' `replace_with_bnb_linear` rule for
    its. Taken before peft wraps any layer (the last module's name is read from the model)."""
    keep = list(getattr(model, "_keep_in_fp32_modules", None) or [])
    if hasattr(model, "all_tied_weights_keys"):  # a transformers model
        from transformers.quantizers.base import get_keys_to_not_convert
        from transformers.quantizers.quantizers_utils import should_convert_module

        keep = list({*keep, *get_keys_to_not_convert(model)})
        return lambda name: not should_convert_module(name, keep)
    return lambda name: name.rsplit(".", 1)[-1] in keep or any(name == k or f"{k}." in name for k in keep)


@dataclass(frozen=True)
class QuantisedLayer:
    weight: torch.Tensor
    held_bytes: int       # as the Trainer holds it now
    quantised_bytes: int  # as the quantised base holds it


def quantised_layers(model: torch.nn.Module, kept: Callable[[str], bool], trained: Iterable[torch.Tensor],
                     precision: str) -> list[QuantisedLayer]:
    """The frozen linear layers of `model` that a `precision` base quantises, with their bytes
    (`kept`: kept_unquantised(model), taken before peft wrapped any layer)."""
    trained_ids = {id(t) for t in trained}
    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or id(module.weight) in trained_ids:
            continue
        if kept(name.replace(LORA_BASE, "")):
            continue
        w = module.weight
        layers.append(QuantisedLayer(w, w.numel() * w.element_size(),
                                     quantised_weight_bytes(w.numel(), w.shape[0], precision)))
    return layers
