"""FLUX.2 [klein]: a 4-billion-parameter rectified-flow transformer (FLUX.2's double- and single-stream
blocks, shared modulation, no biases) over 2x2 patches of a 32-channel VAE's latents, attending to
three hidden layers (9, 18, 27) of a Qwen3 language model reading the prompt through its chat
template. Trained on the undistilled base (black-forest-labs/FLUX.2-klein-base-4B; the distilled
4-step FLUX.2-klein-4B renders), as diffusers', SimpleTuner's and ai-toolkit's trainers do.

Why this 2026 family: its bf16 transformer (7.75 GB) trains a LoRA on a 16 GB card with the text
encoder's embeddings cached and the encoder off the GPU (SimpleTuner measures ~12 GB), under an
Apache-2.0 licence; Z-Image's transformer is 12.3 GB and needs a quantised base to get near 16 GB.

Training as the references do: the VAE's latent mean, patchified 2x2 and normalised by the VAE's
BatchNorm statistics, noise levels drawn logit-normal and shifted by image size as its scheduler
renders, the velocity noise - x0 as the target, tokens with 4-axis positions (time, row, column,
layer). The language model never trains (the references train the transformer only); textual
inversion is refused (TEXTUAL_INVERSION says why).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from dreambooth_core.config import TrainingSettings
from dreambooth_core.errors import ConfigError
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
    unsupported,
    vae_scale,
)
from dreambooth_core.families.flux import refuse_min_snr
from dreambooth_core.families.klein_configs import (
    KLEIN_MAX_SEQUENCE_LENGTH,
    KLEIN_TEXT_OUT_LAYERS,
    write_klein_config_folder,
)
from dreambooth_core.families.klein_lora import KLEIN_LORA_TARGETS
from dreambooth_core.families.klein_tiny import (
    TINY_KLEIN_RESOLUTION,
    TINY_KLEIN_VERSION,
    build_tiny_klein_model,
)

if TYPE_CHECKING:
    import torch

    from dreambooth_core.families.quantised import BasePrecision

    from dreambooth_core.captions.tokenizer import TextTokenizer
    from dreambooth_core.families.objectives import FlowMatchingObjective, NoisyBatch

PIPELINE = "Flux2KleinPipeline"
NATIVE_RESOLUTION = 1024
_SINGLE_FILE_KEY = "double_stream_modulation_img.lin.weight"
TEXTUAL_INVERSION = (
    "--method textual-inversion cannot train FLUX.2 [klein]: its text encoder is a 4-billion-parameter "
    "language model whose hidden layers the transformer reads, so a new word's embedding would train "
    "through all of it every step, and no tool loads such an embedding. Use --method lora.")


class Flux2Klein(Family):
    keys = ("flux2-klein",)
    title = "FLUX.2 [klein] 4B and 9B"
    buckets_by_default = True
    # Its Qwen3 text encoder reads long descriptive captions, like FLUX.1's T5.
    default_captions = "auto"
    denoiser = "transformer"
    lora_targets = KLEIN_LORA_TARGETS
    trainable_text_encoders = 0
    textual_inversion = TEXTUAL_INVERSION
    render_scheduler = "FlowMatchEulerDiscreteScheduler"
    default_guidance = 4.0  # the base model's classifier-free guidance (its pipeline's default)
    tiny_models = (TinyModel("tiny-klein", TINY_KLEIN_VERSION, TINY_KLEIN_RESOLUTION,
                             build_tiny_klein_model),)
    architectures = tuple(
        Architecture(f"flux2-{variant}", (repo,), functools.partial(write_klein_config_folder, variant))
        for repo, variant in (("black-forest-labs/FLUX.2-klein-base-4B", "klein-base-4b"),
                              ("black-forest-labs/FLUX.2-klein-base-9B", "klein-base-9b"),
                              ("black-forest-labs/FLUX.2-klein-4B", "klein-4b"),
                              ("black-forest-labs/FLUX.2-klein-9B", "klein-9b")))

    def recognise(self, folder: Path, index: dict) -> ModelFamily | None:
        if index.get("_class_name") != PIPELINE:
            return None
        transformer = read_config(folder, "transformer/config.json")
        vae = read_config(folder, "vae/config.json")
        if transformer.get("in_channels") != 4 * vae.get("latent_channels", 32):
            raise unsupported(folder, "transformer/config.json",
                              f"a transformer taking in_channels={transformer.get('in_channels')} "
                              "where the VAE's 2x2 patches have "
                              f"{4 * vae.get('latent_channels', 32)}")
        return ModelFamily(family="flux2-klein", prediction_type="flow_matching",
                           resolution=min(NATIVE_RESOLUTION, int(vae.get("sample_size", NATIVE_RESOLUTION))))

    def recognises_single_file(self, keys: set[str]) -> bool:
        return any(key.endswith(_SINGLE_FILE_KEY) for key in keys)

    def convert_single_file(self, weights: Path, options: dict, folder: Path, log: logging.Logger) -> None:
        from dreambooth_core.families.klein_exports import transformer_into_folder

        transformer_into_folder(weights, options, folder, log)

    def check_settings(self, settings: TrainingSettings) -> None:
        refuse_min_snr(settings, self.title)
        super().check_settings(settings)

    def load_parts(self, model_path: str | Path, device: torch.device, weights: bool = True,
                   base: BasePrecision | None = None) -> ModelParts:
        from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
        from transformers import AutoTokenizer, Qwen3ForCausalLM

        parts = ModelParts(
            family=self,
            denoiser=load_component(Flux2Transformer2DModel, model_path, "transformer", weights, base),
            vae=load_component(AutoencoderKLFlux2, model_path, "vae", weights),
            text_encoder=load_component(Qwen3ForCausalLM, model_path, "text_encoder", weights, base),
            tokenizer=AutoTokenizer.from_pretrained(model_path, subfolder="tokenizer"),
            noise_scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(model_path,
                                                                            subfolder="scheduler"))
        return as_training_parts(parts, device)

    def token_judges(self, model_path: str | Path) -> dict[str, TextTokenizer]:
        from dreambooth_core.captions.tokenizer import load_tokenizer

        return {"Qwen": load_tokenizer(model_path, context_length=KLEIN_MAX_SEQUENCE_LENGTH)}

    def encode(self, parts: ModelParts, captions: list[str], encoders: list[torch.nn.Module],
               device: torch.device) -> Condition:
        import torch

        tokenizer = parts.tokenizer
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": caption}], tokenize=False,
                                               add_generation_prompt=True, enable_thinking=False)
                 for caption in captions]
        tokens = tokenizer(texts, return_tensors="pt", padding="max_length", truncation=True,
                           max_length=KLEIN_MAX_SEQUENCE_LENGTH).to(device)
        # The language model without its head: the hidden states are all the transformer reads, and
        # the head's logits (vocabulary x tokens) would be the largest tensor of the step.
        model = getattr(encoders[0], "model", encoders[0])
        states = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                       output_hidden_states=True,
                       use_cache=False).hidden_states
        layers = torch.stack([states[k] for k in KLEIN_TEXT_OUT_LAYERS], dim=2)  # (batch, tokens, 3, width)
        return Condition(layers.reshape(*layers.shape[:2], -1))

    def pixel_multiple(self, folder: Path) -> int:
        """The VAE's scale x the 2x2 latent patches the transformer reads as tokens."""
        return vae_scale(read_config(folder, "vae/config.json")) * 2

    def objective(self, parts: ModelParts, settings: TrainingSettings) -> FlowMatchingObjective:
        from dreambooth_core.families.klein_exports import KleinObjective

        bn, eps = parts.vae.bn, parts.vae.config.batch_norm_eps
        return KleinObjective.of(parts.noise_scheduler.config, bn.running_mean, (bn.running_var + eps).sqrt())

    def predict(self, denoiser: torch.nn.Module, batch: NoisyBatch, condition: Condition,
                images: list[ImageGeometry]) -> torch.Tensor:
        from dreambooth_core.families.klein_exports import latent_ids, text_ids

        noisy = batch.noisy
        size, channels, height, width = noisy.shape
        tokens = noisy.reshape(size, channels, height * width).permute(0, 2, 1)
        out = denoiser(hidden_states=tokens, encoder_hidden_states=condition.hidden, timestep=batch.timesteps,
                       img_ids=latent_ids(size, height, width, noisy.device),
                       txt_ids=text_ids(size, condition.hidden.shape[1], noisy.device), guidance=None,
                       return_dict=False)[0]
        return out.permute(0, 2, 1).reshape(size, channels, height, width)

    def pipeline(self, model_path: str | Path, device: torch.device, trained: ModelParts | None = None):
        from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline
        from diffusers import Flux2Transformer2DModel
        from transformers import AutoTokenizer, Qwen3ForCausalLM

        from dreambooth_core.families.rendering import load_for_inference, load_vae

        own = trained is None
        distilled = read_config(Path(model_path), "model_index.json").get("is_distilled", False)
        return Flux2KleinPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(model_path, subfolder="scheduler"),
            vae=load_vae(AutoencoderKLFlux2, model_path, device),
            text_encoder=load_for_inference(Qwen3ForCausalLM, model_path, "text_encoder", device) if own
            else trained.text_encoder,
            tokenizer=AutoTokenizer.from_pretrained(model_path, subfolder="tokenizer") if own
            else trained.tokenizer,
            transformer=load_for_inference(Flux2Transformer2DModel, model_path, "transformer", device) if own
            else trained.denoiser, is_distilled=distilled)

    # -- exports (klein_exports.py, klein_lora.py) -----------------------------------

    def base_model_keys(self, facts, model_path):
        from dreambooth_core.families.klein_exports import MODEL_SPEC

        return {key: MODEL_SPEC[key] for key in ("modelspec.architecture", "modelspec.implementation")} | {
            "ss_base_model_version": "flux2_klein", "ss_v2": "False"}

    def write_full_model(self, facts, model_path, parts, name, step, dtype, out):
        from dreambooth_core.families.klein_exports import full_model_files

        return full_model_files(model_path, parts, name, dtype, out)

    def write_full_snapshot(self, facts, model_path, parts, name, step, path):
        from dreambooth_core.families.klein_exports import transformer_file

        transformer_file(parts.denoiser, name, path, half=True)

    def read_full_snapshot(self, parts, path, model_path):
        from dreambooth_core.families.klein_exports import read_transformer_file

        read_transformer_file(parts, path)

    def write_lora(self, denoiser, encoders, name, dtype, out):
        from dreambooth_core.families.klein_lora import export_klein_lora

        export_klein_lora(denoiser, out, name, dtype=dtype)
        return [f"{name}.safetensors", f"{name}-diffusers"]

    def write_lora_file(self, denoiser, encoders, path, dtype):
        from dreambooth_core.families.klein_lora import save_kohya_klein_lora

        save_kohya_klein_lora(denoiser, path, dtype=dtype)

    def read_lora_file(self, denoiser, encoders, state):
        from dreambooth_core.families.klein_exports import read_kohya_lora

        read_kohya_lora(denoiser, state)

    def write_embeddings(self, vectors, step, out, full=True):
        raise ConfigError(TEXTUAL_INVERSION)

    def embedding_keys(self, encoders):
        raise ConfigError(TEXTUAL_INVERSION)


FLUX2_KLEIN = Flux2Klein()
