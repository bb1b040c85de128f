"""The files a FLUX.1 session exports, and reading its snapshots back.

- full model: `diffusers/` in the hub's layout, and `<name>.safetensors`: the transformer alone in
  Black Forest Labs' layout (flux_layout.py), the file ComfyUI's diffusion-model loader and
  `FluxTransformer2DModel.from_single_file` read (the VAE and text encoders are the base model's,
  which users have already), with model-spec metadata;
- LoRA: flux_lora.py.

FLUX's activations overflow fp16: an fp16 export is written in bf16, the precision Black Forest
Labs ship.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dreambooth_core.families.family import ModelParts
from dreambooth_core.families.flux_layout import from_bfl_state, to_bfl_state
from dreambooth_core.families.flux_lora import flux_lora_layers
from dreambooth_core.model.hub_layout import save_pipeline
from dreambooth_core.model.safetensors_files import save_safetensors
from dreambooth_core.session.paths import DIFFUSERS


def export_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.bfloat16 if dtype == torch.float16 else dtype


def full_model_files(model_path: str, parts: ModelParts, name: str, step: int, dtype: torch.dtype,
                     out: Path) -> list[str]:
    from diffusers import FluxPipeline

    dtype = export_dtype(dtype)
    pipeline = FluxPipeline.from_pretrained(model_path, transformer=parts.denoiser,
                                            text_encoder=parts.text_encoder,
                                            text_encoder_2=parts.text_encoder_2).to(dtype=dtype)
    save_pipeline(pipeline, out / DIFFUSERS)
    transformer_file(pipeline.transformer, name, step, out / f"{name}.safetensors")
    return [DIFFUSERS, f"{name}.safetensors"]


def transformer_file(transformer: torch.nn.Module, name: str, step: int, path: Path,
                     half: bool = False) -> None:
    """The transformer in BFL's layout, in its own dtype (bf16 with `half`: a copy of each tensor)."""
    state = to_bfl_state(transformer.state_dict())
    if half:
        state = {k: v.detach().to("cpu", torch.bfloat16) for k, v in state.items()}
    save_safetensors({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, path,
                     model_spec(transformer.config.guidance_embeds, name))


def model_spec(guidance_embeds: bool, title: str) -> dict[str, str]:
    """The model-spec entries kohya and Stability AI's spec use for a FLUX.1 transformer file
    ([dev] embeds the guidance scale, [schnell] does not)."""
    variant = "dev" if guidance_embeds else "schnell"
    return {"modelspec.sai_model_spec": "1.0.1", "modelspec.architecture": f"flux-1-{variant}",
            "modelspec.implementation": "https://github.com/black-forest-labs/flux", "modelspec.title": title,
            "modelspec.resolution": "1024x1024"}


def read_transformer_file(parts: ModelParts, path: Path) -> None:
    """A transformer file's weights in place of the parts' own (fp32)."""
    import safetensors.torch

    state = from_bfl_state(safetensors.torch.load_file(str(path)))
    with torch.no_grad():
        parts.denoiser.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def read_lora_state(transformer, text_encoder, state: dict[str, torch.Tensor]) -> None:
    """A LoRA single file's weights into the peft layers the session trains (same layers, same rank)."""
    from dreambooth_core.errors import ModelError

    layers = flux_lora_layers(transformer, text_encoder)
    expected = {f"{key}.{part}" for key in layers for part in ("lora_A.weight", "lora_B.weight", "alpha")}
    if expected != state.keys():
        differ = sorted(expected ^ state.keys())
        raise ModelError(f"the LoRA file does not hold the session's LoRA layers ({len(differ)} keys differ, "
                         f"e.g. {differ[0]}): it was written with other LoRA settings.")
    with torch.no_grad():
        for key, layer in layers.items():
            layer.lora_A["default"].weight.copy_(state[f"{key}.lora_A.weight"])
            layer.lora_B["default"].weight.copy_(state[f"{key}.lora_B.weight"])
