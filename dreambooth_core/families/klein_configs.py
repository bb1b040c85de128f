"""The published configurations of FLUX.2 [klein] (the values of the hub repos' config files), for
sizing a model that is not downloaded: memory estimates and plans.

`write_klein_config_folder` writes one as a diffusers folder of configs only (no weights), from
which every component builds at full size on the meta device or on fake tensors.

Sources: diffusers' `scripts/convert_flux2_to_diffusers.py` (transformer, VAE, scheduler), the
Qwen3-4B / Qwen3-8B configs (text encoders); the base repos are the undistilled checkpoints to train,
the others are their 4-step distilled versions (`is_distilled` makes the pipeline skip CFG).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from dreambooth_core.errors import ModelError
from dreambooth_core.model.tiny import write_qwen_tokenizer

# The text encoder's hidden states (index 0 = embeddings) stacked into the transformer's context,
# as Flux2KleinPipeline does by default (diffusers' klein training script defaults to (10, 20, 30),
# copied from FLUX.2 [dev]: training with those would not match inference).
KLEIN_TEXT_OUT_LAYERS = (9, 18, 27)
KLEIN_MAX_SEQUENCE_LENGTH = 512

TRANSFORMER_4B: dict[str, Any] = dict(
    patch_size=1, in_channels=128, out_channels=None, num_layers=5, num_single_layers=20,
    attention_head_dim=128, num_attention_heads=24, joint_attention_dim=7680, timestep_guidance_channels=256,
    mlp_ratio=3.0, axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, eps=1e-6, guidance_embeds=False)
TRANSFORMER_9B = dict(TRANSFORMER_4B, num_layers=8, num_single_layers=24, num_attention_heads=32,
                      joint_attention_dim=12288)
# The same VAE for every FLUX.2. No scaling or shift factor: latents are normalised by the running
# statistics of its BatchNorm (4 x latent_channels features, after the 2x2 patchify). The published
# file also says force_upcast: true, which AutoencoderKLFlux2 does not take (diffusers warns and drops it).
VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    act_fn="silu", latent_channels=32, norm_num_groups=32, sample_size=1024, use_quant_conv=True,
    use_post_quant_conv=True, mid_block_add_attention=True, batch_norm_eps=1e-4,
    batch_norm_momentum=0.1, patch_size=(2, 2))
SCHEDULER: dict[str, Any] = dict(
    num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
    base_image_seq_len=256, max_image_seq_len=4096)
QWEN3_4B: dict[str, Any] = dict(
    architectures=["Qwen3ForCausalLM"], model_type="qwen3", hidden_size=2560, intermediate_size=9728,
    num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
    max_position_embeddings=40960, rope_theta=1000000, rms_norm_eps=1e-6, hidden_act="silu",
    attention_bias=False, tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645,
    torch_dtype="bfloat16")
QWEN3_8B = dict(QWEN3_4B, hidden_size=4096, intermediate_size=12288, tie_word_embeddings=False)


class KleinArchitecture(NamedTuple):
    transformer: dict[str, Any]
    text_encoder: dict[str, Any]
    distilled: bool


KLEIN_ARCHITECTURES = {
    "klein-base-4b": KleinArchitecture(TRANSFORMER_4B, QWEN3_4B, distilled=False),
    "klein-base-9b": KleinArchitecture(TRANSFORMER_9B, QWEN3_8B, distilled=False),
    "klein-4b": KleinArchitecture(TRANSFORMER_4B, QWEN3_4B, distilled=True),
    "klein-9b": KleinArchitecture(TRANSFORMER_9B, QWEN3_8B, distilled=True),
}
HUB_REPOS = {
    "black-forest-labs/FLUX.2-klein-base-4B": "klein-base-4b",
    "black-forest-labs/FLUX.2-klein-base-9B": "klein-base-9b",
    "black-forest-labs/FLUX.2-klein-4B": "klein-4b",
    "black-forest-labs/FLUX.2-klein-9B": "klein-9b",
}


def model_index(distilled: bool) -> dict[str, Any]:
    """model_index.json of a klein repo."""
    return {"_class_name": "Flux2KleinPipeline", "is_distilled": distilled,
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "text_encoder": ["transformers", "Qwen3ForCausalLM"],
            "tokenizer": ["transformers", "Qwen2TokenizerFast"],
            "transformer": ["diffusers", "Flux2Transformer2DModel"],
            "vae": ["diffusers", "AutoencoderKLFlux2"]}


def klein_architecture(variant: str) -> KleinArchitecture:
    if variant not in KLEIN_ARCHITECTURES:
        raise ModelError(f"There is no FLUX.2 [klein] variant {variant!r}; the known ones are "
                         f"{', '.join(KLEIN_ARCHITECTURES)}.")
    return KLEIN_ARCHITECTURES[variant]


def write_klein_config_folder(variant: str, folder: Path) -> Path:
    """A diffusers folder holding only the configs of `variant` (a key of KLEIN_ARCHITECTURES).

    The tokenizer is the small offline one (dreambooth_core/model/tiny.py): its ids
    only index the text encoder's embedding, whose size comes from the config.
    """
    architecture = klein_architecture(variant)
    folder = Path(folder)
    files = {
        "model_index.json": model_index(architecture.distilled),
        "transformer/config.json": {"_class_name": "Flux2Transformer2DModel", **architecture.transformer},
        "vae/config.json": {"_class_name": "AutoencoderKLFlux2", **VAE},
        "scheduler/scheduler_config.json": {"_class_name": "FlowMatchEulerDiscreteScheduler", **SCHEDULER},
        "text_encoder/config.json": architecture.text_encoder}
    for relative, values in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(json.dumps(values, indent=1))
    write_qwen_tokenizer(folder / "tokenizer")
    return folder
