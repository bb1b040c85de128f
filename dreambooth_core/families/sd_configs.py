"""The published configurations of the hub's Stable Diffusion repos (their config.json
files' values), for sizing a model that is not downloaded: memory estimates and plans.

`write_config_folder` writes one as a diffusers folder of configs only (no weights),
which builds the full architecture with random weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from dreambooth_core.model.tiny import write_tiny_tokenizer

SD15_UNET = dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                 cross_attention_dim=768, attention_head_dim=8)
SD15_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                sample_size=512, scaling_factor=0.18215)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                 num_hidden_layers=12, max_position_embeddings=77, hidden_act="quick_gelu",
                 projection_dim=768)
SD15_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                      beta_schedule="scaled_linear", prediction_type="epsilon")
SD21_UNET = dict(SD15_UNET, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                 use_linear_projection=True)
SD21_TEXT = dict(SD15_TEXT, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                 num_hidden_layers=23, hidden_act="gelu", projection_dim=512)
SD21_768_UNET = dict(SD21_UNET, sample_size=96, upcast_attention=True)
SD21_768_SCHEDULER = dict(SD15_SCHEDULER, prediction_type="v_prediction")
# stabilityai/stable-diffusion-xl-base-1.0
SDXL_UNET = dict(sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                 cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
                 addition_embed_type_num_heads=64, addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816)
SDXL_VAE = dict(SD15_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
SDXL_TEXT_2 = dict(SD15_TEXT, hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
                   num_hidden_layers=32, hidden_act="gelu", projection_dim=1280)
SDXL_SCHEDULER = dict(SD15_SCHEDULER, steps_offset=1, timestep_spacing="leading")

# name: (unet, vae, text encoder, scheduler)
ARCHITECTURES = {
    "sd15": (SD15_UNET, SD15_VAE, SD15_TEXT, SD15_SCHEDULER),
    "sd21-512": (SD21_UNET, SD15_VAE, SD21_TEXT, SD15_SCHEDULER),
    "sd21-768-v": (SD21_768_UNET, SD15_VAE, SD21_TEXT, SD21_768_SCHEDULER),
    "sdxl": (SDXL_UNET, SDXL_VAE, SD15_TEXT, SDXL_SCHEDULER),
}
SECOND_TEXT_ENCODERS = {"sdxl": SDXL_TEXT_2}
HUB_REPOS = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "sd15",
    "runwayml/stable-diffusion-v1-5": "sd15",
    "CompVis/stable-diffusion-v1-4": "sd15",
    "stabilityai/stable-diffusion-2-1-base": "sd21-512",
    "stabilityai/stable-diffusion-2-1": "sd21-768-v",
    "stabilityai/stable-diffusion-xl-base-1.0": "sdxl",
}


def write_config_folder(architecture: str, folder: Path) -> Path:
    """A diffusers folder holding only the configs of `architecture` (a key of ARCHITECTURES);
    the tokenizer is the tiny one (token ids only index the embedding: sizes are the same)."""
    unet, vae, text, scheduler = ARCHITECTURES[architecture]
    second = SECOND_TEXT_ENCODERS.get(architecture)
    pipeline = "StableDiffusionXLPipeline" if second else "StableDiffusionPipeline"
    files = {"model_index.json": {"_class_name": pipeline},
             "unet/config.json": {"_class_name": "UNet2DConditionModel", **unet},
             "vae/config.json": {"_class_name": "AutoencoderKL", **vae},
             "text_encoder/config.json": {"architectures": ["CLIPTextModel"],
                                          "model_type": "clip_text_model", **text},
             "scheduler/scheduler_config.json": {"_class_name": "DDPMScheduler", **scheduler}}
    if second:
        files |= {"model_index.json": {"_class_name": pipeline,
                                       "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]},
                  "text_encoder_2/config.json": {"architectures": ["CLIPTextModelWithProjection"],
                                                 "model_type": "clip_text_model", **second}}
    for relative, values in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(json.dumps(values, indent=1))
    write_tiny_tokenizer(folder / "tokenizer")
    if second:
        write_tiny_tokenizer(folder / "tokenizer_2", pad_token="!")
    return folder
