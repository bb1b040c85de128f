"""SDXL base: a UNet conditioned on two CLIP text encoders (OpenAI CLIP-L and OpenCLIP bigG with a
text projection), their penultimate hidden states side by side, the second's pooled embedding and
six micro-conditioning time ids (addition_embed_type "text_time").

Told by its pipeline (StableDiffusionXLPipeline, or a text_encoder_2 in model_index.json) and its
UNet's text_time conditioning. The refiner (conditioned on an aesthetic score) and SDXL inpainting
are refused with the reason.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from dreambooth_core.families.family import (
    Architecture,
    Condition,
    ImageGeometry,
    ModelFamily,
    ModelParts,
    TinyModel,
    as_training_parts,
    load_component,
    read_config,
    resolution_of,
    unsupported,
)
from dreambooth_core.families.sd_configs import write_config_folder
from dreambooth_core.families.sd_model_spec import apply_declared_spec
from dreambooth_core.families.sd_single_file import SECOND_TEXT_PREFIX
from dreambooth_core.families.sd_tiny import TINY_SDXL_RESOLUTION, TINY_SDXL_VERSION, build_tiny_sdxl_model
from dreambooth_core.families.stable_diffusion import (
    StableDiffusion,
    check_unet,
    prediction_type,
    unet_parts,
    unet_pipeline_parts,
)

if TYPE_CHECKING:
    import torch

    from dreambooth_core.families.quantised import BasePrecision

    from dreambooth_core.captions.tokenizer import TextTokenizer

    from dreambooth_core.families.objectives import NoisyBatch

PIPELINE = "StableDiffusionXLPipeline"
_TEXT_ENCODERS = {"text_encoder": ("CLIPTextModel", "quick_gelu"),
                  "text_encoder_2": ("CLIPTextModelWithProjection", "gelu")}


class Sdxl(StableDiffusion):
    keys = ("sdxl",)
    uses_crop_boxes = True
    buckets_by_default = True
    title = "SDXL base"
    # Trained on long descriptive captions (two CLIP encoders): a caption that names the background
    # and clothing keeps them out of the token, as kohya's and OneTrainer's SDXL guides caption.
    default_captions = "auto"
    tiny_models = (TinyModel("tiny-sdxl", TINY_SDXL_VERSION, TINY_SDXL_RESOLUTION, build_tiny_sdxl_model),)
    architectures = (Architecture("sdxl", ("stabilityai/stable-diffusion-xl-base-1.0",),
                                  functools.partial(write_config_folder, "sdxl")),)

    def recognise(self, folder: Path, index: dict) -> ModelFamily | None:
        pipeline = index.get("_class_name", "")
        if ("Img2Img" in pipeline and "XL" in pipeline) or index.get("requires_aesthetics_score"):
            raise unsupported(folder, "model_index.json",
                              f"it is the SDXL refiner ({pipeline}, conditioned on an "
                              "aesthetic score): it refines the base model's images and is not a "
                              "base to train; use stabilityai/stable-diffusion-xl-base-1.0")
        if "XL" in pipeline and "Inpaint" in pipeline:
            raise unsupported(folder, "model_index.json", f"it is an SDXL inpainting model ({pipeline})")
        if pipeline != PIPELINE and not ("text_encoder_2" in index and "unet" in index):
            return None
        unet = read_config(folder, "unet/config.json")
        check_unet(folder, unet, "text_time", PIPELINE)
        _check_text_encoders(folder)
        return ModelFamily(family="sdxl", prediction_type=prediction_type(folder),
                           resolution=resolution_of(unet, read_config(folder, "vae/config.json")))

    def recognises_single_file(self, keys: set[str]) -> bool:
        """An SDXL base file holds its second (OpenCLIP) text encoder under conditioner.embedders.1."""
        return any(key.startswith(SECOND_TEXT_PREFIX) for key in keys)

    def load_parts(self, model_path: str | Path, device: torch.device, weights: bool = True,
                   base: BasePrecision | None = None) -> ModelParts:
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        parts = unet_parts(self, model_path, weights, base)
        parts.text_encoder_2 = load_component(CLIPTextModelWithProjection, model_path,
                                              "text_encoder_2", weights,
                                              base)
        parts.tokenizer_2 = CLIPTokenizer.from_pretrained(model_path, subfolder="tokenizer_2")
        return as_training_parts(parts, device)

    def token_judges(self, model_path: str | Path) -> dict[str, TextTokenizer]:
        from dreambooth_core.captions.tokenizer import load_tokenizer

        return {"tokenizer": load_tokenizer(model_path),
                "tokenizer_2": load_tokenizer(model_path, "tokenizer_2")}

    def predict(self, denoiser: torch.nn.Module, batch: NoisyBatch, condition: Condition,
                images: list[ImageGeometry]) -> torch.Tensor:
        from dreambooth_core.families.sd_conditioning import time_ids

        conditions = {"text_embeds": condition.pooled, "time_ids": time_ids(images, batch.noisy.device)}
        return denoiser(batch.noisy, batch.timesteps, condition.hidden, added_cond_kwargs=conditions).sample

    def pipeline(self, model_path: str | Path, device: torch.device, trained: ModelParts | None = None):
        from diffusers import StableDiffusionXLPipeline
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        from dreambooth_core.families.rendering import load_for_inference

        second = load_for_inference(CLIPTextModelWithProjection, model_path, "text_encoder_2", device) \
            if trained is None else trained.text_encoder_2
        return StableDiffusionXLPipeline(**unet_pipeline_parts(model_path, device, trained),
                                         text_encoder_2=second,
                                         tokenizer_2=CLIPTokenizer.from_pretrained(model_path,
                                                                                   subfolder="tokenizer_2")
                                         if trained is None else trained.tokenizer_2)

    def convert_single_file(self, weights: Path, options: dict, folder: Path, log: logging.Logger) -> None:
        from diffusers import StableDiffusionXLPipeline

        StableDiffusionXLPipeline.from_single_file(str(weights), **options).save_pretrained(
            folder, safe_serialization=True)
        apply_declared_spec(weights, folder, log)


def _check_text_encoders(folder: Path) -> None:
    for name, (architecture, activation) in _TEXT_ENCODERS.items():
        config = read_config(folder, f"{name}/config.json")
        found = ((config.get("architectures") or [architecture])[0], config.get("hidden_act"))
        if found != (architecture, activation):
            raise unsupported(folder, f"{name}/config.json", f"its {name} is {found[0]} with hidden_act="
                              f"{found[1]!r} (SDXL: {architecture} with {activation})")


SDXL = Sdxl()
