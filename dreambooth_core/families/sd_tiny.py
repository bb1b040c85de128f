"""Small random Stable Diffusion models, built locally, for demos and tests.

`tiny` has the SD 1.x shape (UNet with cross-attention, KL VAE, OpenAI CLIP
text encoder, CLIP-style BPE tokenizer, DDPM noise schedule) at a size that
trains on a CPU in milliseconds per step. `tiny-sd2` and `tiny-sd2-v` have the
SD 2.x traits instead (see `build_tiny_sd2_model`). Their weights come from a
fixed seed, so every machine with the same torch builds the same model.
"""

from __future__ import annotations

from pathlib import Path

from dreambooth_core.model.tiny import tiny_merges, write_tiny_tokenizer

TINY_RESOLUTION = 64
TINY_VERSION = "tiny-sd1-v2"
# SD 2.x: the 768 px v-prediction model is 1.5x the 512 px epsilon one; so are the tiny ones.
TINY_SD2_RESOLUTIONS = {"epsilon": 64, "v_prediction": 96}
TINY_SD2_VERSIONS = {"epsilon": "tiny-sd2-v1", "v_prediction": "tiny-sd2-v-v1"}
TINY_SDXL_RESOLUTION = 64
TINY_SDXL_VERSION = "tiny-sdxl-v1"
# SDXL's micro-conditioning: each of its six time ids (original size, crop corner, target size)
# is embedded in this many channels (256 in SDXL base 1.0).
TINY_SDXL_TIME_EMBED = 8
# The two encoders differ in width, as SDXL's (768, 1280) do: single-file loaders tell them apart by it.
TINY_SDXL_WIDTH_2 = 48
# The text encoder in the folder has 2 layers: it stands for a 3-layer OpenCLIP whose final
# layer was dropped, as diffusers' SD 2 folders keep 23 of OpenCLIP's 24 (SD 2 conditions on
# the penultimate layer's output).
TINY_SD2_TEXT_LAYERS = 2
_SEED = 0
_WIDTH = 32  # text-encoder width = UNet cross-attention width


def build_tiny_model(folder: Path) -> Path:
    """Write a tiny Stable Diffusion in diffusers layout into `folder` and return it."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    write_tiny_tokenizer(folder / "tokenizer", tiny_merges())
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        unet = UNet2DConditionModel(
            sample_size=TINY_RESOLUTION // 4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=_WIDTH, attention_head_dim=8, norm_num_groups=8)
        vae = AutoencoderKL(
            block_out_channels=(16, 32, 32), layers_per_block=1, latent_channels=4, norm_num_groups=8,
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
            sample_size=TINY_RESOLUTION)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=_WIDTH, intermediate_size=64, num_attention_heads=4,
            num_hidden_layers=2, max_position_embeddings=77, projection_dim=_WIDTH,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id))
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="epsilon", clip_sample=False, steps_offset=1)
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_sd2_model(folder: Path, prediction_type: str = "epsilon") -> Path:
    """Write a tiny Stable Diffusion 2.x in diffusers layout into `folder` and return it.

    The SD 2.x traits: an OpenCLIP text encoder stored as a CLIPTextModel with plain GELU and its
    final layer dropped (TINY_SD2_TEXT_LAYERS), a tokenizer padding with "!", a UNet with linear
    proj_in/proj_out (use_linear_projection) and per-block head counts (attention_head_dim list),
    and the scheduler's prediction_type: "epsilon" (SD 2.x 512 px) or "v_prediction" (768 px,
    with upcast attention like SD 2.1).
    """
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    resolution = TINY_SD2_RESOLUTIONS[prediction_type]
    write_tiny_tokenizer(folder / "tokenizer", tiny_merges(), pad_token="!")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED + 2)
        unet = UNet2DConditionModel(
            sample_size=resolution // 4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=_WIDTH,
            attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=8,
            upcast_attention=prediction_type == "v_prediction")
        vae = AutoencoderKL(
            block_out_channels=(16, 32, 32), layers_per_block=1, latent_channels=4, norm_num_groups=8,
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
            sample_size=resolution)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=_WIDTH, intermediate_size=64, num_attention_heads=4,
            num_hidden_layers=TINY_SD2_TEXT_LAYERS, max_position_embeddings=77, projection_dim=_WIDTH,
            hidden_act="gelu", bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id))
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type=prediction_type, clip_sample=False, steps_offset=1)
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_sd2_v_model(folder: Path) -> Path:
    """The tiny SD 2.x model with v-prediction (stands for SD 2.1 768 px)."""
    return build_tiny_sd2_model(folder, "v_prediction")


def build_tiny_sdxl_model(folder: Path) -> Path:
    """Write a tiny SDXL in diffusers layout into `folder` and return it.

    The SDXL traits at narrow width: two text encoders of different widths (an OpenAI CLIP with
    quick_gelu, and a wider OpenCLIP with plain GELU and a text projection, whose pooled output
    conditions the UNet),
    their CLIP BPE tokenizers (the second pads with "!"), a UNet whose cross-attention width is
    the two encoders' widths together, with SDXL's block layout (a plain first block, then
    cross-attention blocks with more transformer layers, linear projections) and its
    micro-conditioning (addition_embed_type "text_time": six time ids plus the pooled text
    embedding), a VAE with SDXL's scaling factor, and SDXL's Euler scheduler config.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = Path(folder)
    write_tiny_tokenizer(folder / "tokenizer", tiny_merges())
    write_tiny_tokenizer(folder / "tokenizer_2", tiny_merges(), pad_token="!")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    tokenizer_2 = CLIPTokenizer.from_pretrained(folder / "tokenizer_2")

    def text_config(width: int, act: str) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_attention_heads=4,
            num_hidden_layers=2, max_position_embeddings=77, projection_dim=width, hidden_act=act,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED + 4)
        unet = UNet2DConditionModel(
            sample_size=TINY_SDXL_RESOLUTION // 4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2),
            attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=8,
            cross_attention_dim=_WIDTH + TINY_SDXL_WIDTH_2, addition_embed_type="text_time",
            addition_time_embed_dim=TINY_SDXL_TIME_EMBED,
            projection_class_embeddings_input_dim=6 * TINY_SDXL_TIME_EMBED + TINY_SDXL_WIDTH_2)
        vae = AutoencoderKL(
            block_out_channels=(16, 32, 32), layers_per_block=1, latent_channels=4, norm_num_groups=8,
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
            sample_size=TINY_SDXL_RESOLUTION, scaling_factor=0.13025, force_upcast=True)
        text_encoder = CLIPTextModel(text_config(_WIDTH, "quick_gelu"))
        text_encoder_2 = CLIPTextModelWithProjection(text_config(TINY_SDXL_WIDTH_2, "gelu"))
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="epsilon", steps_offset=1, timestep_spacing="leading", interpolation_type="linear")
    pipeline = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True)
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder
