"""A tiny random FLUX.2 [klein] base model, built locally, for demos and tests.

It has klein's shape at a width that renders 64x64 in 2 steps on a CPU in a couple of seconds:
- a Flux2Transformer2DModel (2 double-stream + 2 single-stream blocks, 2 heads of 16, 4 rope
  axes of 4, SwiGLU, shared modulation, no biases, no guidance embedding: the base, not [dev]);
- an AutoencoderKLFlux2 with klein's geometry (x8 down, then 2x2 patches: 4 latent channels become
  the transformer's 16 input channels) whose latent BatchNorm holds non-trivial running statistics,
  so that code which forgets to normalise latents gives other numbers;
- a Qwen3ForCausalLM of width 16 with 36 layers like Qwen3-4B, so the family's real out layers
  KLEIN_TEXT_OUT_LAYERS = (9, 18, 27) apply unchanged (the transformer's context is 3 x 16 = 48 wide);
- the offline Qwen2 tokenizer with Qwen's chat template (model/tiny.py);
- klein's scheduler config, and `is_distilled: false` in model_index.json.

Weights come from a fixed seed and are saved as .safetensors, so every machine with the same torch
builds the same model; TINY_KLEIN_VERSION names the build (caches rebuild when it changes).
"""

from __future__ import annotations

from pathlib import Path

from dreambooth_core.families.klein_configs import (
    KLEIN_TEXT_OUT_LAYERS,
    QWEN3_4B,
    SCHEDULER,
    TRANSFORMER_4B,
    VAE,
)
from dreambooth_core.model.tiny import write_qwen_tokenizer

TINY_KLEIN_VERSION = "tiny-klein-v1"
TINY_KLEIN_RESOLUTION = 64
TINY_KLEIN_TEXT_LAYERS = 36
TINY_KLEIN_TEXT_WIDTH = 16
_SEED = 6  # the SD tiny models use 0, 2 and 4
_NOT_TINY = ("architectures", "model_type", "torch_dtype")  # the tiny is float32, built directly

TINY_TRANSFORMER = dict(
    TRANSFORMER_4B, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
    num_attention_heads=2, axes_dims_rope=(4, 4, 4, 4),
    joint_attention_dim=TINY_KLEIN_TEXT_WIDTH * len(KLEIN_TEXT_OUT_LAYERS))
TINY_VAE = dict(VAE, block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4,
                norm_num_groups=4, sample_size=TINY_KLEIN_RESOLUTION)
TINY_TEXT_ENCODER = dict(
    {k: v for k, v in QWEN3_4B.items() if k not in _NOT_TINY}, hidden_size=TINY_KLEIN_TEXT_WIDTH,
    intermediate_size=32, num_hidden_layers=TINY_KLEIN_TEXT_LAYERS, num_attention_heads=2,
    num_key_value_heads=1, head_dim=8)


def build_tiny_klein_model(folder: Path) -> Path:
    """Write the tiny klein in diffusers layout into `folder` and return it."""
    import torch
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen2Tokenizer, Qwen3Config, Qwen3ForCausalLM

    folder = Path(folder)
    tokenizer = Qwen2Tokenizer.from_pretrained(write_qwen_tokenizer(folder / "tokenizer"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        transformer = Flux2Transformer2DModel(**TINY_TRANSFORMER)
        vae = AutoencoderKLFlux2(**TINY_VAE)
        with torch.no_grad():
            vae.bn.running_mean.normal_(0.0, 0.5)
            vae.bn.running_var.uniform_(0.5, 2.0)
        text_encoder = Qwen3ForCausalLM(Qwen3Config(
            **dict(TINY_TEXT_ENCODER, vocab_size=len(tokenizer), bos_token_id=tokenizer.pad_token_id,
                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)))
    pipeline = Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=vae, text_encoder=text_encoder,
        tokenizer=tokenizer, transformer=transformer, is_distilled=False)
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder
