"""Stable Diffusion 1.x and 2.x: a UNet denoising latents of a 4-channel KL VAE, conditioned on one
CLIP text encoder's last hidden state, trained on epsilon or v-prediction (DDPM).

The two differ in their text encoder, which the configs tell apart: SD 1.x has OpenAI's CLIP
(`hidden_act` quick_gelu), SD 2.x OpenCLIP converted to a CLIPTextModel (plain gelu; diffusers'
folders keep 23 of its 24 layers, since SD 2 conditions on the penultimate one). The family key
is "sd1" or "sd2"; what the UNet predicts is the scheduler's `prediction_type`.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from dreambooth_core.config import TrainingSettings
from dreambooth_core.families.family import (
    Architecture,
    Condition,
    Family,
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
from dreambooth_core.families.sd_lora import load_kohya_lora, save_kohya_lora
from dreambooth_core.families.sd_model_spec import apply_declared_spec
from dreambooth_core.families.sd_openclip_layout import save_extras
from dreambooth_core.families.sd_single_file import UNET_PREFIX
from dreambooth_core.families.sd_tiny import (
    TINY_RESOLUTION,
    TINY_SD2_RESOLUTIONS,
    TINY_SD2_VERSIONS,
    TINY_VERSION,
    build_tiny_model,
    build_tiny_sd2_model,
    build_tiny_sd2_v_model,
)

if TYPE_CHECKING:
    import torch

    from dreambooth_core.families.quantised import BasePrecision

    from dreambooth_core.families.objectives import DiffusionObjective, NoisyBatch

_KEY_BY_ACTIVATION = {"quick_gelu": "sd1", "gelu": "sd2"}
_PREDICTION_TYPES = ("epsilon", "v_prediction")
_PIPELINE = "StableDiffusionPipeline"
_XL_PIPELINE = "StableDiffusionXLPipeline"  # named in the refusal of its UNet under another pipeline
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections of every transformer block


class StableDiffusion(Family):
    keys = ("sd1", "sd2")
    lora_targets = LORA_TARGETS
    # DPM-Solver++ (2M) whatever the folder names: no noise between steps, good images in 20-25 steps.
    render_scheduler = "DPMSolverMultistepScheduler"
    title = "Stable Diffusion 1.x and 2.x (512 px epsilon, 768 px v-prediction)"
    # The seed's rule: on SD 1.x faces captions are known to hurt (the notebook's users and its guides
    # train 'photo of shrk man' alone: a short CLIP prompt the token dominates); SD 2.x keeps it too.
    default_captions = "token"
    tiny_models = (
        TinyModel("tiny", TINY_VERSION, TINY_RESOLUTION, build_tiny_model),
        TinyModel("tiny-sd2", TINY_SD2_VERSIONS["epsilon"], TINY_SD2_RESOLUTIONS["epsilon"],
                  build_tiny_sd2_model),
        TinyModel("tiny-sd2-v", TINY_SD2_VERSIONS["v_prediction"], TINY_SD2_RESOLUTIONS["v_prediction"],
                  build_tiny_sd2_v_model))
    architectures = (
        Architecture("sd15", ("stable-diffusion-v1-5/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5",
                              "CompVis/stable-diffusion-v1-4"),
                              functools.partial(write_config_folder, "sd15")),
        Architecture("sd21-512", ("stabilityai/stable-diffusion-2-1-base",),
                     functools.partial(write_config_folder, "sd21-512")),
        Architecture("sd21-768-v", ("stabilityai/stable-diffusion-2-1",),
                     functools.partial(write_config_folder, "sd21-768-v")))

    def recognise(self, folder: Path, index: dict) -> ModelFamily | None:
        if index.get("_class_name", "") not in (_PIPELINE, "") or "text_encoder_2" in index:
            return None
        unet = read_config(folder, "unet/config.json")
        check_unet(folder, unet)
        return ModelFamily(family=_key(folder), prediction_type=prediction_type(folder),
                           resolution=resolution_of(unet, read_config(folder, "vae/config.json")))

    def recognises_single_file(self, keys: set[str]) -> bool:
        return f"{UNET_PREFIX}input_blocks.0.0.weight" in keys

    def load_parts(self, model_path: str | Path, device: torch.device, weights: bool = True,
                   base: BasePrecision | None = None) -> ModelParts:
        return as_training_parts(unet_parts(self, model_path, weights, base), device)

    def encode(self, parts: ModelParts, captions: list[str], encoders: list[torch.nn.Module],
               device: torch.device) -> Condition:
        from dreambooth_core.families.sd_conditioning import encode_captions

        return encode_captions(captions, parts.tokenizers, encoders, device)

    def objective(self, parts: ModelParts, settings: TrainingSettings) -> DiffusionObjective:
        from dreambooth_core.families.objectives import DiffusionObjective

        scheduler = parts.noise_scheduler
        return DiffusionObjective(scheduler, parts.vae.config.scaling_factor,
                                  scheduler.config.prediction_type,
                                  settings.min_snr_gamma)

    def predict(self, denoiser: torch.nn.Module, batch: NoisyBatch, condition: Condition,
                images: list[ImageGeometry]) -> torch.Tensor:
        return denoiser(batch.noisy, batch.timesteps, condition.hidden).sample

    # Exports (sd_exports.py), each loading its libraries when first used.
    def base_model_keys(self, facts, model_path):
        from dreambooth_core.families.sd_model_spec import base_model_keys

        return base_model_keys(facts)

    def write_full_model(self, facts, model_path, parts, name, step, dtype, out):
        from dreambooth_core.families.sd_exports import full_model_files

        return full_model_files(facts, model_path, parts, name, step, dtype, out)

    def write_full_snapshot(self, facts, model_path, parts, name, step, path):
        from dreambooth_core.families.sd_exports import snapshot_single_file

        snapshot_single_file(facts, model_path, parts, name, step, path)

    def read_full_snapshot(self, parts, path, model_path):
        from dreambooth_core.families.sd_exports import read_single_file

        read_single_file(parts, path, model_path)

    def write_lora(self, denoiser, encoders, name, dtype, out):
        from dreambooth_core.families.sd_exports import lora_files

        return lora_files(denoiser, encoders, name, dtype, out)

    def write_lora_file(self, denoiser, encoders, path, dtype):
        save_kohya_lora(denoiser, encoders[0], path, dtype=dtype, text_encoder_2=(encoders + [None])[1])

    def read_lora_file(self, denoiser, encoders, state):
        load_kohya_lora(denoiser, encoders[0], state, text_encoder_2=(encoders + [None])[1])

    def write_embeddings(self, vectors, step, out, full=True):
        from dreambooth_core.families.sd_exports import embedding_files

        return embedding_files(vectors, step, out, full)

    def embedding_keys(self, encoders):
        return ("clip_l", "clip_g") if encoders == 2 else ("emb_params",)

    def pipeline(self, model_path: str | Path, device: torch.device, trained: ModelParts | None = None):
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(**unet_pipeline_parts(model_path, device, trained),
                                       safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)

    def convert_single_file(self, weights: Path, options: dict, folder: Path, log: logging.Logger) -> None:
        from diffusers import StableDiffusionPipeline

        pipeline = StableDiffusionPipeline.from_single_file(str(weights), **options, safety_checker=None,
                                                            requires_safety_checker=False)
        pipeline.save_pretrained(folder, safe_serialization=True)
        # SD 2.x: the text-encoder weights diffusers drops, for a faithful single-file export.
        save_extras(weights, folder)
        apply_declared_spec(weights, folder, log)


def unet_parts(family: Family, model_path: str | Path, weights: bool,
               base: BasePrecision | None = None) -> ModelParts:
    """The UNet, VAE, first text encoder, its tokenizer and the noise scheduler of a folder (the UNet and
    the text encoder as `base` holds them: quantised.py)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    return ModelParts(
        family=family, denoiser=load_component(UNet2DConditionModel, model_path, "unet", weights, base),
        vae=load_component(AutoencoderKL, model_path, "vae", weights),
        text_encoder=load_component(CLIPTextModel, model_path, "text_encoder", weights, base),
        tokenizer=CLIPTokenizer.from_pretrained(model_path, subfolder="tokenizer"),
        noise_scheduler=DDPMScheduler.from_pretrained(model_path, subfolder="scheduler"))


def unet_pipeline_parts(model_path: str | Path, device: torch.device, trained: ModelParts | None) -> dict:
    """The VAE, scheduler, UNet, first text encoder and tokenizer of an SD pipeline (the trained ones
    where given)."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from dreambooth_core.families.rendering import load_for_inference, load_vae

    own = trained is None
    return dict(
        vae=load_vae(AutoencoderKL, model_path, device),
        text_encoder=load_for_inference(CLIPTextModel, model_path, "text_encoder", device) if own
        else trained.text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(model_path, subfolder="tokenizer") if own
        else trained.tokenizer,
        unet=load_for_inference(UNet2DConditionModel, model_path, "unet", device) if own
        else trained.denoiser,
        scheduler=DPMSolverMultistepScheduler.from_pretrained(model_path, subfolder="scheduler"))


def check_unet(folder: Path, unet: dict, extra_embedding: str | None = None,
               pipeline: str = _PIPELINE) -> None:
    """A text-to-image UNet taking the extra embeddings of its family, and no others."""
    extra = unet.get("addition_embed_type")
    if extra and extra != extra_embedding:
        raise unsupported(folder, "unet/config.json",
                          f"the UNet takes extra embeddings (addition_embed_type={extra!r}, as SDXL does) "
                          f"but the pipeline is not {_XL_PIPELINE}")
    if extra_embedding and extra != extra_embedding:
        raise unsupported(folder, "unet/config.json", f"the UNet of this {pipeline} has no {extra_embedding} "
                          f"micro-conditioning (addition_embed_type={extra!r})")
    if unet.get("in_channels", 4) != 4:
        raise unsupported(folder, "unet/config.json",
                          f"the UNet has in_channels={unet['in_channels']} (an inpainting or depth model; "
                          "4 is a text-to-image model)")


def prediction_type(folder: Path) -> str:
    scheduler = read_config(folder, "scheduler/scheduler_config.json")
    prediction = scheduler.get("prediction_type", "epsilon")
    if prediction not in _PREDICTION_TYPES:
        raise unsupported(folder, "scheduler/scheduler_config.json",
                          f"its scheduler has prediction_type={prediction!r} (supported: epsilon, "
                          "v_prediction)")
    return prediction


def _key(folder: Path) -> str:
    text_encoder = read_config(folder, "text_encoder/config.json")
    activation = text_encoder.get("hidden_act")
    architectures = text_encoder.get("architectures") or ["CLIPTextModel"]
    if architectures != ["CLIPTextModel"] or activation not in _KEY_BY_ACTIVATION:
        raise unsupported(folder, "text_encoder/config.json",
                          f"its text encoder is {architectures[0]} with hidden_act={activation!r} "
                          "(SD 1.x: CLIPTextModel with quick_gelu; SD 2.x: CLIPTextModel with gelu)")
    return _KEY_BY_ACTIVATION[activation]


STABLE_DIFFUSION = StableDiffusion()
