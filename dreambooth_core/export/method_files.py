"""What each method exports, written into a local folder.

Each writer returns the top-level names it created there (files and folders),
which the caller then places in the session atomically.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dreambooth_core.export.embedding import export_embeddings
from dreambooth_core.export.lora import export_lora
from dreambooth_core.model.family import ModelFamily
from dreambooth_core.model.hub_layout import save_pipeline
from dreambooth_core.model.inference_config import write_inference_yaml
from dreambooth_core.model.model_spec import model_spec_metadata
from dreambooth_core.model.openclip_layout import load_extras
from dreambooth_core.model.sdxl_single_file import to_sdxl_single_file_state
from dreambooth_core.model.single_file import save_single_file, to_single_file_state
from dreambooth_core.session.paths import DIFFUSERS
from dreambooth_core.training.methods import Trainables, adapted_encoders
from dreambooth_core.training.model_parts import ModelParts


def write_method(method: str, model_path: str, family: ModelFamily, parts: ModelParts, trainables: Trainables,
                 name: str, step: int, dtype: torch.dtype, out: Path) -> list[str]:
    """The files `method` exports, from trained parts and their trainables."""
    if method == "lora":
        return lora_files(parts, trainables, name, dtype, out)
    if method == "textual-inversion":
        return embedding_files(trainables, dtype, step, out)
    return full_model_files(model_path, family, parts, name, step, dtype, out)


def original_layout(model_path: str, family: ModelFamily, unet, vae, text_encoder, name: str,
                    text_encoder_2=None) -> tuple[dict, dict]:
    """(state dict in the original single-file layout, its model-spec metadata)."""
    if family.family == "sdxl":
        state = to_sdxl_single_file_state(unet, vae, text_encoder, text_encoder_2)
    else:  # SD 2.x: the base single file's final text-encoder layer etc. when it was one (else neutral)
        state = to_single_file_state(unet, vae, text_encoder, load_extras(model_path))
    return state, model_spec_metadata(family, name)


def full_model_files(model_path: str, family: ModelFamily, parts: ModelParts, name: str, step: int,
                     dtype: torch.dtype, out: Path) -> list[str]:
    """`<name>.safetensors` and `.ckpt` in the original layout (with `<name>.yaml` for SD 2.x), and a
    diffusers folder in the hub's layout."""
    if family.family == "sdxl":
        from diffusers import StableDiffusionXLPipeline

        pipeline = StableDiffusionXLPipeline.from_pretrained(
            model_path, unet=parts.unet, text_encoder=parts.text_encoder,
            text_encoder_2=parts.text_encoder_2).to(dtype=dtype)
    else:
        from diffusers import StableDiffusionPipeline

        pipeline = StableDiffusionPipeline.from_pretrained(
            model_path, unet=parts.unet, text_encoder=parts.text_encoder,
            safety_checker=None, requires_safety_checker=False).to(dtype=dtype)
    save_pipeline(pipeline, out / DIFFUSERS)
    state, metadata = original_layout(model_path, family, pipeline.unet, pipeline.vae, pipeline.text_encoder, name,
                                      getattr(pipeline, "text_encoder_2", None))
    for fmt in ("safetensors", "ckpt"):
        save_single_file(state, out / f"{name}.{fmt}", fmt, step, metadata)
    if family.family != "sd2":
        return [DIFFUSERS, f"{name}.safetensors", f"{name}.ckpt"]
    # AUTOMATIC1111 reads it to build an SD 2.x model and to choose v-prediction.
    write_inference_yaml(out / f"{name}.yaml", dict(pipeline.unet.config), dict(pipeline.vae.config),
                         dict(pipeline.scheduler.config))
    return [DIFFUSERS, f"{name}.safetensors", f"{name}.ckpt", f"{name}.yaml"]


def lora_files(parts: ModelParts, trainables: Trainables, name: str, dtype: torch.dtype,
               out: Path) -> list[str]:
    text_encoder, text_encoder_2 = adapted_encoders(parts, trainables)
    export_lora(parts.unet, text_encoder, out, name, dtype=dtype, text_encoder_2=text_encoder_2)
    return [f"{name}.safetensors", f"{name}-diffusers"]


def embedding_files(trainables: Trainables, dtype: torch.dtype, step: int, out: Path) -> list[str]:
    export_embeddings(trainables.token_vectors(dtype), out, step, second=trainables.token_vectors_2(dtype))
    return sorted(p.name for p in out.iterdir())
