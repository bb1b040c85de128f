"""FLUX.1 [dev] and [schnell]: a rectified-flow transformer (19 double- and 38 single-stream blocks)
over 2x2 patches of a 16-channel VAE's latents, attending to T5-XXL's token embeddings, modulated
by CLIP-L's pooled embedding and, in [dev], a guidance embedding.

Training follows the reference trainers: the VAE's latents shifted and scaled ((z - 0.1159) x
0.3611), noise levels drawn logit-normal and shifted by image size as the scheduler shifts them
when it renders ([schnell]: not at all), the velocity noise - x0 as the target, latents packed as
the pipeline packs them, positions as image ids (0, row, column) and text ids (zeros). [dev] is told
guidance 1.0 while training, as kohya, SimpleTuner and ai-toolkit do (diffusers' script says 3.5):
the distilled guidance is for rendering. T5 never trains (the references leave it frozen); the
text-encoder phase trains CLIP-L. Textual inversion is refused (TEXTUAL_INVERSION says why).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from dreambooth_core.config import TrainingSettings
from dreambooth_core.errors import ConfigError, ModelError
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
    token_ids,
    unsupported,
    vae_scale,
)
from dreambooth_core.families.flux_configs import FLUX_MAX_SEQUENCE_LENGTH, write_flux_config_folder
from dreambooth_core.families.flux_lora import FLUX_TEXT_LORA_TARGETS, FLUX_TRANSFORMER_LORA_TARGETS
from dreambooth_core.families.flux_tiny import TINY_FLUX_RESOLUTION, TINY_FLUX_VERSIONS, build_tiny_flux_model

if TYPE_CHECKING:
    import torch

    from dreambooth_core.families.quantised import BasePrecision

    from dreambooth_core.captions.tokenizer import TextTokenizer

    from dreambooth_core.families.objectives import FlowMatchingObjective, NoisyBatch

PIPELINE = "FluxPipeline"
NATIVE_RESOLUTION = 1024
TRAINING_GUIDANCE = 1.0
# What tells a FLUX.1 single file apart: each double block's own modulation (FLUX.2's is shared).
_SINGLE_FILE_KEY = "double_blocks.0.img_mod.lin.weight"
_CHECKPOINT_PREFIX = "model.diffusion_model."
TEXTUAL_INVERSION = (
    "--method textual-inversion cannot train FLUX.1: the transformer attends only to T5-XXL's token "
    "embeddings (CLIP-L gives one pooled vector), so a new word's embedding would have to train through "
    "the 4.8-billion-parameter T5 encoder every step, and no embedding format for T5 is shared by "
    "ComfyUI, Forge and diffusers. Use --method lora (a few MB, with the token in its captions).")


class Flux(Family):
    keys = ("flux1",)
    title = "FLUX.1 [dev] and [schnell]"
    buckets_by_default = True
    # T5 reads the long synthetic captions FLUX was trained on; ai-toolkit captions for it by default.
    default_captions = "auto"
    denoiser = "transformer"
    lora_targets = FLUX_TRANSFORMER_LORA_TARGETS
    text_lora_targets = FLUX_TEXT_LORA_TARGETS
    trainable_text_encoders = 1  # CLIP-L
    textual_inversion = TEXTUAL_INVERSION
    # Euler on the flow: no noise between steps.
    render_scheduler = "FlowMatchEulerDiscreteScheduler"
    default_guidance = 3.5  # [dev]'s distilled guidance as Black Forest Labs render; [schnell] has none
    tiny_models = (
        TinyModel("tiny-flux", TINY_FLUX_VERSIONS["dev"], TINY_FLUX_RESOLUTION, build_tiny_flux_model),
        TinyModel("tiny-flux-schnell", TINY_FLUX_VERSIONS["schnell"], TINY_FLUX_RESOLUTION,
                  functools.partial(build_tiny_flux_model, variant="schnell")))
    architectures = (
        Architecture("flux1-dev", ("black-forest-labs/FLUX.1-dev",),
                     functools.partial(write_flux_config_folder, "dev")),
        Architecture("flux1-schnell", ("black-forest-labs/FLUX.1-schnell",),
                     functools.partial(write_flux_config_folder, "schnell")))

    # -- recognition -----------------------------------------------------------

    def recognise(self, folder: Path, index: dict) -> ModelFamily | None:
        if index.get("_class_name") != PIPELINE:
            return None
        transformer = read_config(folder, "transformer/config.json")
        latent_channels = read_config(folder, "vae/config.json").get("latent_channels", 16)
        if transformer.get("in_channels") != 4 * latent_channels:
            raise unsupported(folder, "transformer/config.json",
                              "a FLUX.1 transformer taking "
                              f"in_channels={transformer.get('in_channels')} (FLUX.1 Fill, Depth or "
                              "Canny: conditioned on more than the latents; a text-to-image model "
                              f"takes {4 * latent_channels})")
        for name, architecture in (("text_encoder", "CLIPTextModel"), ("text_encoder_2", "T5EncoderModel")):
            found = (read_config(folder, f"{name}/config.json").get("architectures") or [architecture])[0]
            if found != architecture:
                raise unsupported(folder, f"{name}/config.json",
                                  f"its {name} is {found} (FLUX.1: {architecture})")
        return ModelFamily(family="flux1", prediction_type="flow_matching", resolution=_resolution(folder))

    def recognises_single_file(self, keys: set[str]) -> bool:
        return _SINGLE_FILE_KEY in keys or _CHECKPOINT_PREFIX + _SINGLE_FILE_KEY in keys

    def convert_single_file(self, weights: Path, options: dict, folder: Path, log: logging.Logger) -> None:
        """A FLUX.1 single file holds the transformer alone: the rest comes from --single-file-config."""
        import safetensors.torch
        from diffusers import FluxPipeline

        from dreambooth_core.families.flux_layout import from_bfl_state
        from dreambooth_core.model.hub_layout import save_pipeline

        if not options.get("config"):
            raise ModelError(f"{weights.name} is a FLUX.1 transformer alone (Black Forest Labs' "
                             "layout): pass --single-file-config with the diffusers folder or repo "
                             "of its variant (black-forest-labs/FLUX.1-dev or FLUX.1-schnell) for "
                             "its VAE and text encoders.")
        pipeline = FluxPipeline.from_pretrained(options["config"],
                                                local_files_only=options["local_files_only"],
                                                cache_dir=options["cache_dir"], token=options["token"])
        state = from_bfl_state(safetensors.torch.load_file(str(weights)))
        missing, unexpected = pipeline.transformer.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelError(f"{weights.name} does not fit the transformer of {options['config']} ("
                             f"{len(missing)} weights missing, {len(unexpected)} unexpected, e.g. "
                             f"{(missing or unexpected)[0]}): pass --single-file-config of the same variant.")
        save_pipeline(pipeline, folder)
        log.info("The transformer of %s took the place of %s's own", weights.name, options["config"])

    # -- components and training ---------------------------------------------------

    def load_parts(self, model_path: str | Path, device: torch.device, weights: bool = True,
                   base: BasePrecision | None = None) -> ModelParts:
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
        from transformers import AutoTokenizer, CLIPTextModel, CLIPTokenizer, T5EncoderModel

        parts = ModelParts(
            family=self,
            denoiser=load_component(FluxTransformer2DModel, model_path, "transformer", weights, base),
            vae=load_component(AutoencoderKL, model_path, "vae", weights),
            text_encoder=load_component(CLIPTextModel, model_path, "text_encoder", weights, base),
            tokenizer=CLIPTokenizer.from_pretrained(model_path, subfolder="tokenizer"),
            noise_scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(model_path,
                                                                            subfolder="scheduler"),
            text_encoder_2=load_component(T5EncoderModel, model_path, "text_encoder_2", weights, base),
            tokenizer_2=AutoTokenizer.from_pretrained(model_path, subfolder="tokenizer_2"))
        return as_training_parts(parts, device)

    def token_judges(self, model_path: str | Path) -> dict[str, TextTokenizer]:
        from dreambooth_core.captions.tokenizer import load_tokenizer

        config = read_config(Path(model_path), "transformer/config.json")
        length = FLUX_MAX_SEQUENCE_LENGTH["dev" if config.get("guidance_embeds") else "schnell"]
        return {"CLIP": load_tokenizer(model_path),
                "T5": load_tokenizer(model_path, "tokenizer_2", context_length=length)}

    def encode(self, parts: ModelParts, captions: list[str], encoders: list[torch.nn.Module],
               device: torch.device) -> Condition:
        pooled = encoders[0](token_ids(parts.tokenizer, captions, device)).pooler_output
        t5 = parts.tokenizer_2(captions, padding="max_length", max_length=t5_length(parts), truncation=True,
                               return_tensors="pt").input_ids.to(device)
        return Condition(encoders[1](t5)[0], pooled)

    def check_settings(self, settings: TrainingSettings) -> None:
        refuse_min_snr(settings, self.title)
        super().check_settings(settings)

    def pixel_multiple(self, folder: Path) -> int:
        """The VAE's scale x the 2x2 latent patches the transformer reads as tokens."""
        return vae_scale(read_config(folder, "vae/config.json")) * 2

    def objective(self, parts: ModelParts, settings: TrainingSettings) -> FlowMatchingObjective:
        from dreambooth_core.families.objectives import flow_objective

        vae = parts.vae.config
        return flow_objective(parts.noise_scheduler.config, 2, vae.scaling_factor, vae.shift_factor)

    def predict(self, denoiser: torch.nn.Module, batch: NoisyBatch, condition: Condition,
                images: list[ImageGeometry]) -> torch.Tensor:
        import torch

        noisy = batch.noisy
        size, height, width = noisy.shape[0], noisy.shape[2], noisy.shape[3]
        guidance = torch.full((size,), TRAINING_GUIDANCE, device=noisy.device) \
            if _config(denoiser).guidance_embeds else None
        packed = denoiser(hidden_states=pack(noisy), timestep=batch.timesteps, guidance=guidance,
                          pooled_projections=condition.pooled, encoder_hidden_states=condition.hidden,
                          txt_ids=torch.zeros(condition.hidden.shape[1], 3, device=noisy.device),
                          img_ids=image_ids(height // 2, width // 2, noisy.device), return_dict=False)[0]
        return unpack(packed, height, width)

    # -- rendering ----------------------------------------------------------------

    def pipeline(self, model_path: str | Path, device: torch.device, trained: ModelParts | None = None):
        from diffusers import (
            AutoencoderKL,
            FlowMatchEulerDiscreteScheduler,
            FluxPipeline,
            FluxTransformer2DModel,
        )
        from transformers import AutoTokenizer, CLIPTextModel, CLIPTokenizer, T5EncoderModel

        from dreambooth_core.families.rendering import load_for_inference, load_vae

        own = trained is None
        return FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(model_path, subfolder="scheduler"),
            vae=load_vae(AutoencoderKL, model_path, device),
            text_encoder=load_for_inference(CLIPTextModel, model_path, "text_encoder", device) if own
            else trained.text_encoder,
            tokenizer=CLIPTokenizer.from_pretrained(model_path, subfolder="tokenizer") if own
            else trained.tokenizer,
            text_encoder_2=load_for_inference(T5EncoderModel, model_path, "text_encoder_2", device)
            if own
            else trained.text_encoder_2,
            tokenizer_2=AutoTokenizer.from_pretrained(model_path, subfolder="tokenizer_2") if own
            else trained.tokenizer_2,
            transformer=load_for_inference(FluxTransformer2DModel, model_path, "transformer", device)
            if own
            else trained.denoiser)

    # -- exports --------------------------------------------------------------------

    def base_model_keys(self, facts, model_path):
        from dreambooth_core.families.flux_exports import model_spec

        config = read_config(Path(model_path), "transformer/config.json")
        spec = model_spec(config.get("guidance_embeds", True), "")
        return {key: spec[key] for key in ("modelspec.architecture", "modelspec.implementation")} | {
            "ss_base_model_version": "flux1", "ss_v2": "False"}  # kohya's flux_utils.MODEL_VERSION_FLUX_V1

    def write_full_model(self, facts, model_path, parts, name, step, dtype, out):
        from dreambooth_core.families.flux_exports import full_model_files

        return full_model_files(model_path, parts, name, step, dtype, out)

    def write_full_snapshot(self, facts, model_path, parts, name, step, path):
        from dreambooth_core.families.flux_exports import transformer_file

        transformer_file(parts.denoiser, name, step, path, half=True)

    def read_full_snapshot(self, parts, path, model_path):
        from dreambooth_core.families.flux_exports import read_transformer_file

        read_transformer_file(parts, path)

    def write_lora(self, denoiser, encoders, name, dtype, out):
        from dreambooth_core.families.flux_lora import export_flux_lora

        export_flux_lora(denoiser, encoders[0], out, name, dtype=dtype)
        return [f"{name}.safetensors", f"{name}-diffusers"]

    def write_lora_file(self, denoiser, encoders, path, dtype):
        from dreambooth_core.families.flux_lora import save_flux_lora_file

        save_flux_lora_file(denoiser, encoders[0], path, dtype=dtype)

    def read_lora_file(self, denoiser, encoders, state):
        from dreambooth_core.families.flux_exports import read_lora_state

        read_lora_state(denoiser, encoders[0], state)

    def write_embeddings(self, vectors, step, out, full=True):
        raise ConfigError(TEXTUAL_INVERSION)

    def embedding_keys(self, encoders):
        raise ConfigError(TEXTUAL_INVERSION)


def refuse_min_snr(settings: TrainingSettings, title: str) -> None:
    if settings.min_snr_gamma:
        raise ConfigError("--min-snr-gamma weights a DDPM model's noise levels by their "
                          f"signal-to-noise ratio; {title} trains on a flow, where it does not "
                          "apply. Leave it out, or train a Stable Diffusion model.")


def t5_length(parts: ModelParts) -> int:
    """The T5 tokens the variant was trained with: 512 for [dev], 256 for [schnell] (no guidance embedder)."""
    variant = "dev" if _config(parts.denoiser).guidance_embeds else "schnell"
    return min(FLUX_MAX_SEQUENCE_LENGTH[variant], parts.tokenizer_2.model_max_length)


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(batch, channels, height, width) -> (batch, tokens, channels x 4): each 2x2 patch a token,
    row by row."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(
        b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    b, _, features = tokens.shape
    c = features // 4
    return tokens.view(b, height // 2, width // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(
        b, c, height, width)


def image_ids(rows: int, columns: int, device: torch.device) -> torch.Tensor:
    """Each token's position for the rotary embedding: (0, row, column)."""
    import torch

    grid = torch.zeros(rows, columns, 3, device=device)
    grid[..., 1] = torch.arange(rows, device=device)[:, None]
    grid[..., 2] = torch.arange(columns, device=device)[None, :]
    return grid.reshape(rows * columns, 3)


def _config(denoiser):
    """The transformer's config, through a DDP or compile wrapper."""
    return getattr(denoiser, "config", None) or denoiser.module.config


def _resolution(folder: Path) -> int:
    """FLUX.1 renders at 1024 px and its configs name no size; a tiny model's VAE says its own."""
    vae = read_config(folder, "vae/config.json")
    return min(NATIVE_RESOLUTION, int(vae.get("sample_size", NATIVE_RESOLUTION)))


FLUX = Flux()
