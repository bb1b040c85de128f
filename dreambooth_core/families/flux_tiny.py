"""Small random FLUX.1 models, built offline, for demos and tests.

They have FLUX.1's shape at a width that renders 64 x 64 px on a CPU in a second: a
FluxTransformer2DModel with double- and single-stream blocks and RoPE over (text, row,
column) axes, a 16-channel KL VAE that shrinks by 8 (so 2 x 2 latent patches make the 64
input features), a CLIP text encoder whose pooled output conditions the transformer, a T5
encoder whose token embeddings it attends to, FLUX's flow-matching scheduler, and offline
tokenizers (CLIP BPE, T5 Unigram) that know the words of the tiny SD models. The widths
differ (transformer 48, T5 40, CLIP 32) so that a mixed-up connection fails loudly. The
weights come from a fixed seed: every machine with the same torch builds the same model.
"""

from __future__ import annotations

from pathlib import Path

from dreambooth_core.families.flux_configs import T5_MODEL_MAX_LENGTH, flux_configs
from dreambooth_core.model.hub_layout import save_pipeline
from dreambooth_core.model.tiny import (
    TINY_PIECES,
    TINY_WORDS,
    tiny_merges,
    write_tiny_t5_tokenizer,
    write_tiny_tokenizer,
)

TINY_FLUX_RESOLUTION = 64
TINY_FLUX_VERSIONS = {"dev": "tiny-flux-dev-v1", "schnell": "tiny-flux-schnell-v1"}
TINY_FLUX_WIDTHS = {"transformer": 48, "t5": 40, "clip": 32}
_SEEDS = {"dev": 10, "schnell": 11}


def build_tiny_flux_model(folder: Path, variant: str = "dev") -> Path:
    """Write a tiny FLUX.1 `variant` ("dev": guidance embedder and shifted schedule; "schnell":
    neither) in diffusers layout into `folder` and return it."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel,
                              T5TokenizerFast)

    scheduler = FlowMatchEulerDiscreteScheduler(**flux_configs(variant).scheduler)  # refuses unknown variants
    folder = Path(folder)
    write_tiny_tokenizer(folder / "tokenizer", tiny_merges())
    pieces = ["".join(pair) for pair in TINY_PIECES]
    write_tiny_t5_tokenizer(folder / "tokenizer_2", TINY_WORDS, T5_MODEL_MAX_LENGTH, pieces)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    tokenizer_2 = T5TokenizerFast.from_pretrained(folder / "tokenizer_2")
    width = TINY_FLUX_WIDTHS
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEEDS[variant])
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=2, num_single_layers=3, attention_head_dim=16,
            num_attention_heads=width["transformer"] // 16, joint_attention_dim=width["t5"],
            pooled_projection_dim=width["clip"], axes_dims_rope=(4, 6, 6), guidance_embeds=variant == "dev")
        vae = AutoencoderKL(
            block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=16, norm_num_groups=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            sample_size=TINY_FLUX_RESOLUTION, scaling_factor=0.3611, shift_factor=0.1159,
            use_quant_conv=False, use_post_quant_conv=False, force_upcast=True)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=width["clip"], intermediate_size=64, num_attention_heads=4,
            num_hidden_layers=2, max_position_embeddings=77, projection_dim=width["clip"],
            hidden_act="quick_gelu", bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
        text_encoder_2 = T5EncoderModel(T5Config(
            vocab_size=len(tokenizer_2), d_model=width["t5"], d_ff=64, d_kv=10, num_heads=4, num_layers=2,
            feed_forward_proj="gated-gelu", is_encoder_decoder=False, pad_token_id=tokenizer_2.pad_token_id,
            eos_token_id=tokenizer_2.eos_token_id, decoder_start_token_id=0))
    pipeline = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                            text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer)
    save_pipeline(pipeline, folder)
    return folder
