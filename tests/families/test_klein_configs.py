"""The published klein configs build the published model sizes, from a folder with no weights."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
from transformers import AutoConfig, AutoTokenizer, Qwen3ForCausalLM

from dreambooth_core.errors import ModelError
from dreambooth_core.families.klein_configs import (
    HUB_REPOS,
    KLEIN_TEXT_OUT_LAYERS,
    klein_architecture,
    write_klein_config_folder,
)

# Billions of parameters of the transformer and the text encoder (the research notes' §1.4, whose
# figures match the shipped files: 7.75 GB for the 4B transformer in bf16).
SIZES = {"klein-base-4b": (3.876, 4.022), "klein-base-9b": (9.079, 8.191)}
# Exact counts of shipped files: Qwen3-4B's index says 8,044,936,192 bytes in bf16; the FLUX.2 VAE.
QWEN3_4B_PARAMETERS = 8_044_936_192 // 2
VAE_PARAMETERS = 84_046_115


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # tied weights count once


@pytest.mark.parametrize("variant", sorted(SIZES))
def test_config_folder_builds_the_published_sizes_on_the_meta_device(variant, tmp_path):
    folder = write_klein_config_folder(variant, tmp_path / variant)
    assert not list(folder.rglob("*.safetensors"))
    with torch.device("meta"):
        config = Flux2Transformer2DModel.load_config(folder / "transformer")
        transformer = Flux2Transformer2DModel.from_config(config)
        vae = AutoencoderKLFlux2.from_config(AutoencoderKLFlux2.load_config(folder / "vae"))
        text_encoder = Qwen3ForCausalLM(AutoConfig.from_pretrained(folder / "text_encoder"))
    billions = round(_parameters(transformer) / 1e9, 3), round(_parameters(text_encoder) / 1e9, 3)
    assert billions == SIZES[variant]
    assert _parameters(vae) == VAE_PARAMETERS
    if variant == "klein-base-4b":
        assert _parameters(text_encoder) == QWEN3_4B_PARAMETERS
    # The stacked hidden states are the transformer's context.
    context_width = text_encoder.config.hidden_size * len(KLEIN_TEXT_OUT_LAYERS)
    assert transformer.config.joint_attention_dim == context_width
    assert text_encoder.config.num_hidden_layers >= max(KLEIN_TEXT_OUT_LAYERS)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler")
    assert scheduler.config.use_dynamic_shifting


def test_base_repos_are_undistilled_and_the_tokenizer_prompts_offline(tmp_path):
    for repo, variant in HUB_REPOS.items():
        assert klein_architecture(variant).distilled == ("base" not in repo)
    folder = write_klein_config_folder("klein-base-4b", tmp_path / "base")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "Flux2KleinPipeline" and index["is_distilled"] is False
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "a dog"}], tokenize=False,
                                        add_generation_prompt=True, enable_thinking=False)
    assert text == "<|im_start|>user\na dog<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert max(tokenizer(text).input_ids) < AutoConfig.from_pretrained(folder / "text_encoder").vocab_size


def test_unknown_variant_names_the_known_ones(tmp_path):
    with pytest.raises(ModelError, match="klein-base-4b"):
        write_klein_config_folder("klein-base-8b", tmp_path)
