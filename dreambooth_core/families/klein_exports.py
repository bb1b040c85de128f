"""FLUX.2 [klein]'s latents and positions, the files a session exports, and reading snapshots back.

- full model: `diffusers/` in the hub's layout, and `<name>.safetensors`: the transformer alone in
  Black Forest Labs' layout (klein_layout.py), as BFL ship it beside the diffusers folder, which
  ComfyUI's diffusion-model loader and `Flux2Transformer2DModel.from_single_file` (given the repo's
  config) read; an fp16 export is written in bf16, as FLUX's activations overflow fp16;
- LoRA: klein_lora.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from dreambooth_core.errors import ModelError
from dreambooth_core.families.family import ModelParts
from dreambooth_core.families.klein_layout import from_bfl_state, to_bfl_state
from dreambooth_core.families.klein_lora import KOHYA_PREFIX, bfl_module_for_lora
from dreambooth_core.families.peft_layers import lora_layers
from dreambooth_core.families.objectives import FlowMatchingObjective, flow_objective
from dreambooth_core.model.hub_layout import save_pipeline
from dreambooth_core.model.safetensors_files import save_safetensors
from dreambooth_core.session.paths import DIFFUSERS


@dataclass(frozen=True)
class KleinObjective(FlowMatchingObjective):
    """The flow objective on the VAE's latent mean patchified 2x2 and normalised by its BatchNorm's
    running statistics (what the pipeline decodes from, undoing the same steps)."""

    bn_mean: torch.Tensor | None = None
    bn_std: torch.Tensor | None = None

    @classmethod
    def of(cls, scheduler_config, bn_mean: torch.Tensor, bn_std: torch.Tensor) -> KleinObjective:
        flow = flow_objective(scheduler_config, patch=1, sample_latents=False)
        return cls(flow.shift, flow.dynamic, flow.patch, sample_latents=False, bn_mean=bn_mean, bn_std=bn_std)

    def latents(self, mean, std, generator, device):
        patches = patchify(mean)
        return (patches - self.bn_mean.view(1, -1, 1, 1).to(patches)) \
            / self.bn_std.view(1, -1, 1, 1).to(patches)


def patchify(latents: torch.Tensor) -> torch.Tensor:
    """(batch, channels, height, width) -> (batch, channels x 4, height / 2, width / 2), as FLUX.2 does."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(
        b, c * 4, h // 2, w // 2)


def latent_ids(batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """Each latent token's position (time 0, row, column, layer 0)."""
    ids = torch.zeros(height, width, 4, device=device)
    ids[..., 1] = torch.arange(height, device=device)[:, None]
    ids[..., 2] = torch.arange(width, device=device)[None, :]
    return ids.reshape(1, height * width, 4).expand(batch, -1, -1)


def text_ids(batch: int, length: int, device: torch.device) -> torch.Tensor:
    """Each text token's position (time 0, row 0, column 0, its index)."""
    ids = torch.zeros(length, 4, device=device)
    ids[:, 3] = torch.arange(length, device=device)
    return ids.reshape(1, length, 4).expand(batch, -1, -1)


def full_model_files(model_path: str, parts: ModelParts, name: str, dtype: torch.dtype,
                     out: Path) -> list[str]:
    from diffusers import Flux2KleinPipeline

    dtype = torch.bfloat16 if dtype == torch.float16 else dtype
    pipeline = Flux2KleinPipeline.from_pretrained(model_path, transformer=parts.denoiser).to(dtype=dtype)
    save_pipeline(pipeline, out / DIFFUSERS)
    transformer_file(pipeline.transformer, name, out / f"{name}.safetensors")
    return [DIFFUSERS, f"{name}.safetensors"]


MODEL_SPEC = {"modelspec.sai_model_spec": "1.0.1", "modelspec.architecture": "flux-2-klein",
              "modelspec.implementation": "https://github.com/black-forest-labs/flux2"}


def transformer_file(transformer: torch.nn.Module, name: str, path: Path, half: bool = False) -> None:
    """The transformer in BFL's layout, in its own dtype (bf16 with `half`: a copy of each tensor)."""
    state = to_bfl_state(transformer.state_dict())
    dtype = torch.bfloat16 if half else None
    metadata = MODEL_SPEC | {"modelspec.title": name}
    save_safetensors({k: v.detach().to("cpu", dtype).contiguous() for k, v in state.items()}, path, metadata)


def read_transformer_file(parts: ModelParts, path: Path) -> None:
    import safetensors.torch

    state = from_bfl_state(safetensors.torch.load_file(str(path)))
    with torch.no_grad():
        parts.denoiser.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def transformer_into_folder(weights: Path, options: dict, folder: Path, log: logging.Logger) -> None:
    """A klein single file holds the transformer alone: the rest comes from --single-file-config."""
    import safetensors.torch
    from diffusers import Flux2KleinPipeline

    if not options.get("config"):
        raise ModelError(f"{weights.name} is a FLUX.2 transformer alone (Black Forest Labs' layout): pass "
                         "--single-file-config with the diffusers folder or repo it belongs to (e.g. "
                         "black-forest-labs/FLUX.2-klein-base-4B) for its VAE and text encoder.")
    pipeline = Flux2KleinPipeline.from_pretrained(options["config"],
                                                  local_files_only=options["local_files_only"],
                                                  cache_dir=options["cache_dir"], token=options["token"])
    missing, unexpected = pipeline.transformer.load_state_dict(
        from_bfl_state(safetensors.torch.load_file(str(weights))), strict=False)
    if missing or unexpected:
        raise ModelError(f"{weights.name} does not fit the transformer of {options['config']} "
                         f"({len(missing)} weights missing, {len(unexpected)} unexpected, e.g. "
                         f"{(missing or unexpected)[0]}): pass --single-file-config of the same "
                         "variant.")
    save_pipeline(pipeline, folder)
    log.info("The transformer of %s took the place of %s's own", weights.name, options["config"])


@torch.no_grad()
def read_kohya_lora(transformer, state: dict[str, torch.Tensor]) -> None:
    """A kohya-layout klein LoRA (q, k and v fused into qkv: stacked downs, block-diagonal ups) back
    into the transformer's peft layers of the same rank."""
    for name, layer in lora_layers(transformer).items():
        module = bfl_module_for_lora(name)
        key = KOHYA_PREFIX + module.name.replace(".", "_")
        if f"{key}.lora_down.weight" not in state:
            raise ModelError(f"the LoRA file has no {key}: it was written with other LoRA settings.")
        down, up = state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"]
        rank = layer.lora_A["default"].weight.shape[0]
        if module.third is not None:  # the part of the fused qkv this layer is
            rows = up.shape[0] // 3
            down = down[module.third * rank:(module.third + 1) * rank]
            up = up[module.third * rows:(module.third + 1) * rows,
                    module.third * rank:(module.third + 1) * rank]
        layer.lora_A["default"].weight.copy_(down)
        layer.lora_B["default"].weight.copy_(up)
