"""The published configurations of FLUX.1 [dev] and [schnell] in diffusers layout (the values
of black-forest-labs/FLUX.1-dev and FLUX.1-schnell's config files), for sizing a model that
is not downloaded: memory estimates on fake tensors or the meta device.

The two variants share every weight shape except the guidance embedder ([dev] is
guidance-distilled: `guidance_embeds`), and differ in the scheduler ([dev] shifts its sigmas
by the image size, [schnell] not at all) and in the longest T5 prompt they were distilled
with. `write_flux_config_folder` writes one as a diffusers folder of configs only (no weights),
from which each part's `from_config` builds the full architecture.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from dreambooth_core.errors import ModelError
from dreambooth_core.model.tiny import TINY_WORDS, write_tiny_t5_tokenizer, write_tiny_tokenizer

FLUX_VARIANTS = ("dev", "schnell")
FLUX_HUB_REPOS = {"black-forest-labs/FLUX.1-dev": "dev", "black-forest-labs/FLUX.1-schnell": "schnell"}
_DIFFUSERS_VERSION = "0.30.0.dev0"  # what the published files carry

FLUX_MODEL_INDEX = {
    "_class_name": "FluxPipeline",
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "FluxTransformer2DModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
# 19 double-stream and 38 single-stream blocks of width 24 x 128 = 3072; 64 input features are
# 16 latent channels in 2x2 patches. The last two entries are diffusers' defaults, written out.
FLUX_DEV_TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                            attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                            pooled_projection_dim=768, guidance_embeds=True,
                            out_channels=None, axes_dims_rope=[16, 56, 56])
FLUX_SCHNELL_TRANSFORMER = dict(FLUX_DEV_TRANSFORMER, guidance_embeds=False)
FLUX_VAE = dict(act_fn="silu", block_out_channels=[128, 256, 512, 512], in_channels=3, out_channels=3,
                down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                latent_channels=16, layers_per_block=2, norm_num_groups=32, sample_size=1024,
                scaling_factor=0.3611, shift_factor=0.1159, latents_mean=None, latents_std=None,
                use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True,
                force_upcast=True)
FLUX_DEV_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                          max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
FLUX_SCHNELL_SCHEDULER = dict(FLUX_DEV_SCHEDULER, shift=1.0, use_dynamic_shifting=False)
# openai/clip-vit-large-patch14's text tower (only its pooled output conditions FLUX). Its
# eos_token_id 2 is the legacy value: transformers then pools at the highest token id.
FLUX_CLIP_TEXT = dict(architectures=["CLIPTextModel"], model_type="clip_text_model", vocab_size=49408,
                      hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu",
                      layer_norm_eps=1e-5, attention_dropout=0.0, dropout=0.0, initializer_factor=1.0,
                      initializer_range=0.02, bos_token_id=0, eos_token_id=2, pad_token_id=1)
# google/t5-v1_1-xxl's encoder: its token embeddings are all FLUX attends to.
FLUX_T5_TEXT = dict(architectures=["T5EncoderModel"], model_type="t5", vocab_size=32128, d_model=4096,
                    d_ff=10240, d_kv=64, num_heads=64, num_layers=24, num_decoder_layers=24,
                    feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True,
                    relative_attention_num_buckets=32, relative_attention_max_distance=128,
                    layer_norm_epsilon=1e-6, dropout_rate=0.1, initializer_factor=1.0,
                    is_encoder_decoder=True, tie_word_embeddings=False, decoder_start_token_id=0,
                    pad_token_id=0, eos_token_id=1, classifier_dropout=0.0, output_past=True)
CLIP_MAX_LENGTH = 77
T5_MODEL_MAX_LENGTH = 512  # tokenizer_2's model_max_length in both repos
# The longest T5 prompt each variant was trained with (diffusers' docs; kohya's defaults):
# [schnell] refuses more than 256 tokens.
FLUX_MAX_SEQUENCE_LENGTH = {"dev": 512, "schnell": 256}


class FluxConfigs(NamedTuple):
    """The config values of one FLUX.1 variant, by diffusers component."""

    transformer: dict
    vae: dict
    scheduler: dict
    text_encoder: dict
    text_encoder_2: dict


def flux_configs(variant: str) -> FluxConfigs:
    """The published configs of FLUX.1 `variant` ("dev" or "schnell")."""
    if variant not in FLUX_VARIANTS:
        raise ModelError(f"Unknown FLUX.1 variant {variant!r}: use one of {', '.join(FLUX_VARIANTS)}.")
    dev = variant == "dev"
    return FluxConfigs(
        transformer=dict(FLUX_DEV_TRANSFORMER if dev else FLUX_SCHNELL_TRANSFORMER), vae=dict(FLUX_VAE),
        scheduler=dict(FLUX_DEV_SCHEDULER if dev else FLUX_SCHNELL_SCHEDULER),
        text_encoder=dict(FLUX_CLIP_TEXT), text_encoder_2=dict(FLUX_T5_TEXT))


def write_flux_config_folder(variant: str, folder: Path) -> Path:
    """A diffusers folder holding only the configs of FLUX.1 `variant`, and return it.

    The tokenizers are tiny offline ones (CLIP's 77 and T5's 512 token limits kept): token ids
    only index the embeddings, whose sizes come from the configs.
    """
    configs = flux_configs(variant)
    folder = Path(folder)
    files = {"model_index.json": FLUX_MODEL_INDEX,
             "transformer/config.json": {"_class_name": "FluxTransformer2DModel", **configs.transformer},
             "vae/config.json": {"_class_name": "AutoencoderKL", **configs.vae},
             "scheduler/scheduler_config.json": {"_class_name": "FlowMatchEulerDiscreteScheduler",
                                                 **configs.scheduler},
             "text_encoder/config.json": configs.text_encoder,
             "text_encoder_2/config.json": configs.text_encoder_2}
    for relative, values in files.items():
        if relative.split("/")[0] in ("model_index.json", "transformer", "vae", "scheduler"):
            values = {"_class_name": values["_class_name"], "_diffusers_version": _DIFFUSERS_VERSION,
                      **values}
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(json.dumps(values, indent=1))
    write_tiny_tokenizer(folder / "tokenizer")
    write_tiny_t5_tokenizer(folder / "tokenizer_2", TINY_WORDS, T5_MODEL_MAX_LENGTH)
    return folder
