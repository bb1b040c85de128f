"""The tiny klein loads in diffusers' own pipeline, renders, and is the same on every build."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import torch
from diffusers import Flux2KleinPipeline

from dreambooth_core.families.klein_configs import KLEIN_TEXT_OUT_LAYERS
from dreambooth_core.families.klein_tiny import TINY_KLEIN_RESOLUTION, build_tiny_klein_model


def _pipeline(folder: Path) -> Flux2KleinPipeline:
    pipeline = Flux2KleinPipeline.from_pretrained(folder, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_renders_with_the_pipelines_defaults(tiny_klein):
    pipeline = _pipeline(tiny_klein)
    # The real out layers index real layers of the tiny encoder: no tiny-only setting is needed.
    defaults = inspect.signature(pipeline.__call__).parameters
    assert defaults["text_encoder_out_layers"].default == KLEIN_TEXT_OUT_LAYERS
    image = pipeline(prompt="a photo of a man", height=TINY_KLEIN_RESOLUTION, width=TINY_KLEIN_RESOLUTION,
                     num_inference_steps=2, generator=torch.manual_seed(0), output_type="pt").images
    assert image.shape == (1, 3, TINY_KLEIN_RESOLUTION, TINY_KLEIN_RESOLUTION)
    assert torch.isfinite(image).all() and image.std() > 0.01
    embeds, _ = pipeline.encode_prompt(prompt="a photo of a man")
    assert embeds.shape[-1] == pipeline.transformer.config.joint_attention_dim


def test_is_the_undistilled_base_with_safetensors_weights(tiny_klein):
    assert json.loads((tiny_klein / "model_index.json").read_text())["is_distilled"] is False
    assert len(list(tiny_klein.rglob("*.safetensors"))) == 3 and not list(tiny_klein.rglob("*.bin"))
    pipeline = _pipeline(tiny_klein)
    assert not pipeline.transformer.config.guidance_embeds
    bn = pipeline.vae.bn  # latents are normalised by these statistics: they must not be the identity
    assert bn.running_mean.abs().min() > 0 and (bn.running_var - 1).abs().min() > 0


def test_tokenizer_knows_a_few_words_and_splits_the_rest_into_bytes(tiny_klein):
    tokenizer = _pipeline(tiny_klein).tokenizer
    pieces = tokenizer.convert_ids_to_tokens(tokenizer("a photo of a man person dog").input_ids)
    assert pieces == ["a", "Ġphoto", "Ġof", "Ġa", "Ġman", "Ġperson", "Ġdog"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("photo zebra").input_ids) == ["photo", "Ġ", *"zebra"]


def _weights_digest(folder: Path) -> str:
    sha = hashlib.sha256()
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            sha.update(str(file.relative_to(folder)).encode() + file.read_bytes())
    return sha.hexdigest()


def test_same_model_on_every_build(tiny_klein, tmp_path):
    assert _weights_digest(build_tiny_klein_model(tmp_path / "again")) == _weights_digest(tiny_klein)
