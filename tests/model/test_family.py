"""The family, prediction type and resolution are read from a model's own configs; other
architectures are refused with a message that says what was found and where."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dreambooth_core.errors import ModelError
from dreambooth_core.model.expected import expected_resolution
from dreambooth_core.model.family import ModelFamily, detect_family
from dreambooth_core.model.fetch import fetch_model


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def sd2_folder(cache) -> Path:
    return Path(fetch_model("tiny-sd2", cache).path)


@pytest.mark.parametrize("spec, expected", [
    ("tiny", ModelFamily(family="sd1", prediction_type="epsilon", resolution=64)),
    ("tiny-sd2", ModelFamily(family="sd2", prediction_type="epsilon", resolution=64)),
    ("tiny-sd2-v", ModelFamily(family="sd2", prediction_type="v_prediction", resolution=96)),
])
def test_tiny_models_are_detected(spec, expected, cache):
    model = fetch_model(spec, cache)
    assert detect_family(model.path) == model.family == expected
    # What the photo checks expect before the fetch is what the fetched model says.
    assert expected_resolution(spec, None)[0] == expected_resolution(model.path, None)[0] == expected.resolution


def _edited_copy(folder: Path, target: Path, relative: str, **changes) -> Path:
    shutil.copytree(folder, target)
    config = target / relative
    config.write_text(json.dumps({**json.loads(config.read_text()), **changes}))
    return target


def test_scheduler_without_prediction_type_means_epsilon(sd2_folder, tmp_path):
    folder = shutil.copytree(sd2_folder, tmp_path / "m")
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "prediction_type"}))
    assert detect_family(folder).prediction_type == "epsilon"


def test_sample_prediction_is_refused(sd2_folder, tmp_path):
    folder = _edited_copy(sd2_folder, tmp_path / "m", "scheduler/scheduler_config.json", prediction_type="sample")
    with pytest.raises(ModelError, match=r"scheduler_config\.json shows .*prediction_type='sample'"):
        detect_family(folder)


def test_inpainting_unet_is_refused(sd2_folder, tmp_path):
    folder = _edited_copy(sd2_folder, tmp_path / "m", "unet/config.json", in_channels=9)
    with pytest.raises(ModelError, match=r"unet/config\.json shows the UNet has in_channels=9 \(an inpainting"):
        detect_family(folder)


def test_unknown_text_encoder_is_refused(sd2_folder, tmp_path):
    folder = _edited_copy(sd2_folder, tmp_path / "m", "text_encoder/config.json", hidden_act="silu")
    with pytest.raises(ModelError, match=r"text_encoder/config\.json shows .*hidden_act='silu'.*Supported are"):
        detect_family(folder)


def test_missing_config_is_named(sd2_folder, tmp_path):
    folder = shutil.copytree(sd2_folder, tmp_path / "m")
    (folder / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(ModelError, match=r"has no scheduler/scheduler_config\.json"):
        detect_family(folder)


def _build_tiny_sdxl(folder: Path) -> Path:
    """A real (random, tiny) SDXL pipeline saved by diffusers."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    tokenizer = CLIPTokenizer.from_pretrained(fetch_model("tiny", folder.parent / "cache").path, subfolder="tokenizer")
    torch.manual_seed(0)
    text = dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_attention_heads=2,
                num_hidden_layers=1, projection_dim=16, hidden_act="gelu")
    unet = UNet2DConditionModel(
        sample_size=8, layers_per_block=1, block_out_channels=(32, 64), norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=16 + 6 * 8)
    vae = AutoencoderKL(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    pipeline = StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**text)), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**text)), tokenizer_2=tokenizer,
        unet=unet, scheduler=EulerDiscreteScheduler())
    pipeline.save_pretrained(folder)
    return folder


def test_sdxl_is_refused_by_name(tmp_path):
    folder = _build_tiny_sdxl(tmp_path / "sdxl")
    with pytest.raises(ModelError) as caught:
        detect_family(folder)
    message = str(caught.value)
    assert "model_index.json shows it is an SDXL model (StableDiffusionXLPipeline)" in message
    assert "Supported are Stable Diffusion 1.x and 2.x" in message
