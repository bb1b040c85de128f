"""The frozen base held in another precision (--base-precision): half, or quantised (QLoRA).

The denoiser and the text encoders load quantised through the libraries made for it, by the
quantization configs diffusers' and transformers' `from_pretrained` take: each weight is quantised as
it is read from the file (their low_cpu_mem_usage path), so a quantised 12 B model is never held in
fp32 on the host first. The VAE stays as it is: it is small and encodes each image once. LoRA
adapters (peft) sit on the quantised layers and train in fp32; exports start again from the base
model's own weights, so the LoRA applies to the unquantised model.

Which library holds each precision, and why:
- int8: torchao's int8 weight-only (Int8WeightOnlyConfig, one scale per output row). It runs on the
  CPU as on CUDA, so the CPU tests run the code path a GPU run takes, and peft adapts its layers
  (TorchaoLoraLinear). bitsandbytes' LLM.int8 is not used: diffusers refuses to load it without a GPU,
  and its outlier split makes a training step slower.
- fp8: torchao's float8 weight-only (Float8WeightOnlyConfig, e4m3, one scale per row). On CUDA it is
  taken only from compute capability 8.9 (Ada, Hopper), the GPUs with float8 in hardware (torchao's
  float8 matmuls need it too); an older GPU is pointed to int8, which holds the same byte a weight in
  a format it has. On the CPU it runs dequantised.
- nf4: bitsandbytes' 4-bit NormalFloat with double quantisation, QLoRA's format (diffusers' and
  transformers' BitsAndBytesConfig). CUDA only: its loader refuses without a GPU.
- bf16, fp16: no library; the frozen layers are held in that dtype (training/memory/frozen_weights.py).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dreambooth_core.errors import ConfigError

if TYPE_CHECKING:
    import torch

QUANTISED = ("fp8", "int8", "nf4")
HALF_BASES = ("bf16", "fp16")
LIBRARY = {"fp8": "torchao", "int8": "torchao", "nf4": "bitsandbytes"}
FP8_CAPABILITY = (8, 9)


@dataclass(frozen=True)
class BasePrecision:
    """How a family's load_parts holds the frozen base: `name` (--base-precision), and `compute`, the
    run's resolved --mixed-precision ("no", "fp16", "bf16"): the dtype the matrix products run in, which a
    quantised weight dequantises to (torchao's dequantise to the dtype the model loads in, and a
    CUDA matmul refuses bf16 activations against fp32 weights; bitsandbytes computes in it)."""

    name: str = "auto"
    compute: str = "no"

    @property
    def quantised(self) -> bool:
        return self.name in QUANTISED

    def dtype(self) -> torch.dtype:
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.compute, torch.float32)


def check_base_precision(base_precision: str, method: str, device: str, precision: str) -> None:
    """Refuse, with the reason and what to pass instead, a base precision this method or this
    installation cannot hold (what the device lacks: training/devices.py precision_problem).
    `device`: where it trains ("cpu", "cuda", "cuda:1"); `precision`: its resolved --mixed-precision
    ("no", "fp16", "bf16")."""
    if base_precision == "auto":
        return
    flag = f"--base-precision {base_precision}"
    if base_precision in HALF_BASES:
        _check_half(flag, base_precision, precision)
        return
    if method == "dreambooth":
        # The text encoders alone are not quantised for DreamBooth either: they train in its first
        # --text-encoder-steps, and what dominates its memory is the trained denoiser's fp32 weights,
        # gradients and optimizer state, which quantisation cannot touch (--offload, --memory auto can).
        raise ConfigError(f"{flag} quantises the frozen base, but --method dreambooth trains the "
                          "denoiser's own weights, which cannot be trained quantised. Use --method lora "
                          "(QLoRA) or textual-inversion, or --base-precision auto/bf16 for DreamBooth.")
    library = LIBRARY[base_precision]
    if importlib.util.find_spec(library) is None:
        raise ConfigError(f"{flag} needs the {library} package, which is not installed: "
                          f"pip install {library}, or pass --base-precision auto.")


def _check_half(flag: str, base_precision: str, precision: str) -> None:
    if precision == "no":
        raise ConfigError(f"{flag} holds the frozen weights in {base_precision}, which only matrix products "
                          "in half precision can use; this run has no mixed precision. Pass "
                          f"--mixed-precision {base_precision}, or --base-precision auto.")


def load_frozen(kind, model_path: str | Path, subfolder: str, base: BasePrecision) -> torch.nn.Module:
    """A diffusers or transformers model from its sub-folder, quantised as its weights are read in the
    compute dtype (what the quantised weights dequantise to); as_training_parts puts the layers the
    library does not hold back in fp32 (unquantised_to), as it does an unquantised model's."""
    config = quantisation_config(kind, base)
    dtype = {("dtype" if _transformers(kind) else "torch_dtype"): base.dtype()}
    return kind.from_pretrained(model_path, subfolder=subfolder, quantization_config=config, **dtype)


def quantisation_config(kind, base: BasePrecision):
    """The diffusers or transformers quantization config of `base` for the model class `kind`."""
    if base.name == "nf4":
        options = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                       bnb_4bit_compute_dtype=base.dtype())
        if _transformers(kind):
            from transformers import BitsAndBytesConfig
        else:
            from diffusers import BitsAndBytesConfig
        return BitsAndBytesConfig(**options)
    if _transformers(kind):
        from transformers import TorchAoConfig
    else:
        from diffusers import TorchAoConfig
    return TorchAoConfig(torchao_config(base.name))


def torchao_config(base_precision: str):
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

    return {"int8": Int8WeightOnlyConfig, "fp8": Float8WeightOnlyConfig}[base_precision]()


def quantise_built(module: torch.nn.Module, base: BasePrecision) -> None:
    """Quantise, in place, a model built from its config alone (fake-tensor estimates, the dry run):
    torchao's precisions only, since bitsandbytes quantises on a real GPU as it loads."""
    from torchao.quantization import quantize_

    module.to(base.dtype())
    quantize_(module, torchao_config(base.name))


def _transformers(kind) -> bool:
    return not hasattr(kind, "load_config")  # diffusers' models have it (see load_component)


def unquantised_to(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Casts, in place, the floating weights and buffers of a quantised model that the library does not
    hold (norms, biases, convolutions, embeddings) to `dtype`; the quantised ones stay as they are."""
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point() and not is_quantised_weight(tensor) and tensor.dtype != dtype:
            tensor.data = tensor.data.to(dtype)


def is_quantised(module: torch.nn.Module) -> bool:
    """Whether a model holds quantised weights: loaded so (diffusers and transformers mark it), or
    quantised after it was built (quantise_built)."""
    marked = bool(getattr(module, "is_quantized", False))
    return marked or any(is_quantised_weight(p) for p in module.parameters())


def is_quantised_weight(parameter: torch.Tensor) -> bool:
    """A weight a quantisation library holds: bitsandbytes' (Params4bit, Int8Params: integer storage
    once on the GPU), or a torchao tensor subclass (which reports the dtype it dequantises to); such
    weights are never cast."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    return (not parameter.is_floating_point() or type(parameter).__module__.startswith("bitsandbytes")
            or is_traceable_wrapper_subclass(parameter.data))
