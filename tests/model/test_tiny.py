"""The tiny SD 2.x models have the SD 2.x traits and are the same on every build."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline

from dreambooth_core.families.base_model import fetch_model
from dreambooth_core.families.sd_tiny import TINY_SD2_TEXT_LAYERS, build_tiny_sd2_model
from dreambooth_core.families import TINY_MODELS


@pytest.fixture(scope="module", params=["tiny-sd2", "tiny-sd2-v"])
def model(request, tmp_path_factory):
    local = fetch_model(request.param, tmp_path_factory.mktemp("cache"))
    return request.param, local, StableDiffusionPipeline.from_pretrained(local.path, local_files_only=True)


def test_sd2_traits(model):
    spec, local, pipeline = model
    text = pipeline.text_encoder.config
    assert (text.hidden_act, text.num_hidden_layers) == ("gelu", TINY_SD2_TEXT_LAYERS)
    assert pipeline.tokenizer.pad_token == "!"
    unet = pipeline.unet
    assert unet.config.use_linear_projection and list(unet.config.attention_head_dim) == [2, 4]
    assert isinstance(unet.down_blocks[0].attentions[0].proj_in, torch.nn.Linear)
    assert unet.config.upcast_attention == (spec == "tiny-sd2-v")
    expected = "v_prediction" if spec == "tiny-sd2-v" else "epsilon"
    assert pipeline.scheduler.config.prediction_type == expected
    assert (local.kind, local.source) == ("tiny", spec)
    assert unet.config.sample_size * 4 == TINY_MODELS[spec].resolution


def test_sd2_text_encoder_pads_with_exclamation_mark(model):
    _, _, pipeline = model
    ids = pipeline.tokenizer("photo", padding="max_length", max_length=6).input_ids
    assert ids[-1] == pipeline.tokenizer.convert_tokens_to_ids("!") != pipeline.tokenizer.eos_token_id


def _weights_digest(folder: Path) -> str:
    sha = hashlib.sha256()
    for file in sorted(folder.rglob("*.safetensors")):
        sha.update(file.read_bytes())
    return sha.hexdigest()


def test_same_model_on_every_build(model, tmp_path):
    spec, local, _ = model
    rebuilt = build_tiny_sd2_model(tmp_path / "again", "v_prediction" if spec == "tiny-sd2-v" else "epsilon")
    assert _weights_digest(rebuilt) == _weights_digest(Path(local.path))


def test_tiny_sd2_models_differ_from_each_other_and_from_sd1(tmp_path):
    digests = {spec: fetch_model(spec, tmp_path).digest for spec in ("tiny", "tiny-sd2", "tiny-sd2-v")}
    assert len(set(digests.values())) == 3
