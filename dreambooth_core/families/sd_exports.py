"""The files a Stable Diffusion 1.x, 2.x or SDXL session exports, and reading snapshots back.

- full model: `<name>.safetensors` and `.ckpt` in the original single-file layout (with
  `<name>.yaml` for SD 2.x, which AUTOMATIC1111 reads to build the model and choose
  v-prediction), and `diffusers/` in the hub's layout;
- LoRA: the kohya-layout `<name>.safetensors` and a diffusers folder (sd_lora.py);
- textual inversion: one embedding per token (sd_embedding.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from dreambooth_core.families.family import ModelFamily, ModelParts
from dreambooth_core.families.sd_embedding import export_embeddings
from dreambooth_core.families.sd_inference_config import write_inference_yaml
from dreambooth_core.families.sd_lora import export_lora
from dreambooth_core.families.sd_model_spec import model_spec_metadata
from dreambooth_core.families.sd_openclip_layout import load_extras
from dreambooth_core.families.sd_single_file import to_single_file_state
from dreambooth_core.families.sdxl_single_file import to_sdxl_single_file_state
from dreambooth_core.model.hub_layout import save_pipeline
from dreambooth_core.model.safetensors_files import save_single_file
from dreambooth_core.session.paths import DIFFUSERS


def original_layout(facts: ModelFamily, model_path: str, unet, vae, text_encoders: list,
                    name: str) -> tuple[dict, dict]:
    """(state dict in the original single-file layout, its model-spec metadata)."""
    if len(text_encoders) == 2:
        state = to_sdxl_single_file_state(unet, vae, *text_encoders)
    else:  # SD 2.x: the base single file's final text-encoder layer etc. when it was one (else neutral)
        state = to_single_file_state(unet, vae, text_encoders[0], load_extras(model_path))
    return state, model_spec_metadata(facts, name)


def full_model_files(facts: ModelFamily, model_path: str, parts: ModelParts, name: str, step: int,
                     dtype: torch.dtype, out: Path) -> list[str]:
    pipeline = _pipeline_with(model_path, parts).to(dtype=dtype)
    save_pipeline(pipeline, out / DIFFUSERS)
    encoders = [e for e in (pipeline.text_encoder, getattr(pipeline, "text_encoder_2", None)) if e is not None]
    state, metadata = original_layout(facts, model_path, pipeline.unet, pipeline.vae, encoders, name)
    for fmt in ("safetensors", "ckpt"):
        save_single_file(state, out / f"{name}.{fmt}", fmt, step, metadata)
    if facts.family != "sd2":
        return [DIFFUSERS, f"{name}.safetensors", f"{name}.ckpt"]
    write_inference_yaml(out / f"{name}.yaml", dict(pipeline.unet.config), dict(pipeline.vae.config),
                         dict(pipeline.scheduler.config))
    return [DIFFUSERS, f"{name}.safetensors", f"{name}.ckpt", f"{name}.yaml"]


def _pipeline_with(model_path: str, parts: ModelParts):
    if parts.text_encoder_2 is not None:
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline.from_pretrained(model_path, unet=parts.denoiser,
                                                         text_encoder=parts.text_encoder,
                                                         text_encoder_2=parts.text_encoder_2)
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(model_path, unet=parts.denoiser, text_encoder=parts.text_encoder,
                                                   safety_checker=None, requires_safety_checker=False)


def snapshot_single_file(facts: ModelFamily, model_path: str, parts: ModelParts, name: str,
                         step: int, path: Path) -> None:
    """The full model as one fp16 original-layout file (the training modules stay fp32: each tensor
    is converted as a copy)."""
    state, metadata = original_layout(facts, model_path, parts.denoiser, parts.vae, parts.text_encoders, name)
    state = {k: v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.cpu() for k, v in state.items()}
    save_single_file(state, path, "safetensors", step, metadata)


def read_single_file(parts: ModelParts, weights: Path, model_path: str) -> None:
    """The UNet and text encoder(s) of an original-layout single file, read with diffusers' own
    single-file loading against the base model's configs, in place of the parts' own (fp32)."""
    if parts.text_encoder_2 is not None:
        from diffusers import StableDiffusionXLPipeline

        pipeline = StableDiffusionXLPipeline.from_single_file(str(weights), config=model_path, local_files_only=True)
        parts.text_encoder_2 = pipeline.text_encoder_2.to(torch.float32)
    else:
        from diffusers import StableDiffusionPipeline

        pipeline = StableDiffusionPipeline.from_single_file(
            str(weights), config=model_path, local_files_only=True, safety_checker=None,
            requires_safety_checker=False)
    parts.denoiser = pipeline.unet.to(torch.float32)
    parts.text_encoder = pipeline.text_encoder.to(torch.float32)


def lora_files(denoiser, encoders: list, name: str, dtype: torch.dtype, out: Path) -> list[str]:
    export_lora(denoiser, encoders[0], out, name, dtype=dtype, text_encoder_2=(encoders + [None])[1])
    return [f"{name}.safetensors", f"{name}-diffusers"]


def embedding_files(vectors: list[dict[str, torch.Tensor]], step: int, out: Path, full: bool = True) -> list[str]:
    """`vectors`: each text encoder's vectors by token. Without `full`, only what a snapshot keeps."""
    export_embeddings(vectors[0], out, step, write_pt=full, second=(vectors + [None])[1])
    return sorted(p.name for p in out.iterdir())
