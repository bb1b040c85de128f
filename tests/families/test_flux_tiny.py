"""The tiny FLUX.1 models load and render with diffusers, have FLUX.1's geometry and traits,
tokenize the demo's words, and are the same on every build."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from safetensors import safe_open

from dreambooth_core.errors import ModelError
from dreambooth_core.families.flux_tiny import TINY_FLUX_RESOLUTION, TINY_FLUX_VERSIONS, build_tiny_flux_model
from dreambooth_core.model.tiny import TINY_WORDS


@pytest.fixture(scope="module", params=["dev", "schnell"])
def tiny(request, tmp_path_factory):
    folder = build_tiny_flux_model(tmp_path_factory.mktemp(request.param) / "model", request.param)
    return request.param, folder, FluxPipeline.from_pretrained(folder, local_files_only=True)


def _render(pipeline, prompt: str) -> torch.Tensor:
    return pipeline(prompt, height=TINY_FLUX_RESOLUTION, width=TINY_FLUX_RESOLUTION, num_inference_steps=2,
                    max_sequence_length=32, output_type="pt",
                    generator=torch.Generator().manual_seed(0)).images


def test_renders_an_image_that_depends_on_the_prompt(tiny):
    _, _, pipeline = tiny
    dog, cat = _render(pipeline, "a photo of shrk dog"), _render(pipeline, "a photo of a cat")
    assert dog.shape == (1, 3, TINY_FLUX_RESOLUTION, TINY_FLUX_RESOLUTION) and torch.isfinite(dog).all()
    assert not torch.equal(dog, cat)


def test_flux_geometry_and_variant_traits(tiny):
    variant, folder, pipeline = tiny
    transformer = FluxTransformer2DModel.from_pretrained(folder, subfolder="transformer",
                                                         local_files_only=True)
    assert list((folder / "transformer").glob("*.safetensors"))
    assert not list(folder.rglob("*.bin"))
    torch.testing.assert_close(transformer.state_dict(), pipeline.transformer.state_dict(), rtol=0, atol=0)
    config = transformer.config
    assert pipeline.vae_scale_factor == 8 and pipeline.vae.config.latent_channels == 16
    assert config.in_channels == 4 * 16  # 2 x 2 patches of 16 latent channels
    assert config.joint_attention_dim == pipeline.text_encoder_2.config.d_model
    assert config.pooled_projection_dim == pipeline.text_encoder.config.hidden_size
    assert config.guidance_embeds == (variant == "dev")
    assert pipeline.scheduler.config.use_dynamic_shifting == (variant == "dev")
    assert (config.num_layers, config.num_single_layers) == (2, 3)


def test_tokenizers_know_the_demo_words_and_split_any_other(tiny):
    _, _, pipeline = tiny
    clip, t5 = pipeline.tokenizer, pipeline.tokenizer_2
    assert (clip.model_max_length, t5.model_max_length) == (77, 512)
    assert all(len(t5(word).input_ids) == 2 for word in TINY_WORDS)  # the word and the end token
    assert len(clip("photo").input_ids) == 3  # the tiny SD models' CLIP tokenizer, start and end tokens
    assert t5.convert_ids_to_tokens(t5("shrk").input_ids) == ["▁shr", "k", "</s>"]
    assert t5.unk_token_id not in t5("Zebras, 42 quokkas!").input_ids
    assert max(t5("a photo of a quokka").input_ids) < pipeline.text_encoder_2.config.vocab_size


def test_hub_layout_that_transformers4_reads_too(tiny):
    """As the hub's FLUX.1 repos (loading with 4.x: tests/families/test_flux_lora.py)."""
    _, folder, _ = tiny
    with safe_open(str(folder / "text_encoder" / "model.safetensors"), "pt") as file:
        assert all(key.startswith("text_model.") for key in file.keys())
    index = json.loads((folder / "model_index.json").read_text())
    assert index["tokenizer_2"] == ["transformers", "T5TokenizerFast"]
    config = json.loads((folder / "tokenizer_2" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "T5TokenizerFast" and "extra_special_tokens" not in config


def _weights_digest(folder: Path) -> str:
    sha = hashlib.sha256()
    for file in sorted(folder.rglob("*.safetensors")):
        sha.update(file.read_bytes())
    return sha.hexdigest()


def test_same_model_on_every_build_and_variants_differ(tiny, tmp_path):
    variant, folder, _ = tiny
    assert _weights_digest(build_tiny_flux_model(tmp_path / "again", variant)) == _weights_digest(folder)
    other = "schnell" if variant == "dev" else "dev"
    assert _weights_digest(build_tiny_flux_model(tmp_path / other, other)) != _weights_digest(folder)
    assert TINY_FLUX_VERSIONS[variant] != TINY_FLUX_VERSIONS[other]


def test_unknown_variant_is_refused(tmp_path):
    with pytest.raises(ModelError, match="Unknown FLUX.1 variant"):
        build_tiny_flux_model(tmp_path, "pro")
