"""The family, prediction type and resolution are read from a model's own configs; other
architectures are refused with a message that says what was found and where."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dreambooth_core.errors import ModelError
from dreambooth_core.families.expected import expected_resolution
from dreambooth_core.families import ModelFamily, detect_family
from dreambooth_core.families.base_model import fetch_model
from dreambooth_core.families.sd_tiny import TINY_SDXL_RESOLUTION, build_tiny_sdxl_model


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


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory) -> Path:
    return build_tiny_sdxl_model(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.mark.slow  # renders with diffusers' SDXL pipeline
def test_the_tiny_sdxl_is_detected_from_its_configs_and_renders_in_diffusers(sdxl_folder):
    import torch
    from diffusers import StableDiffusionXLPipeline

    assert detect_family(sdxl_folder) == fetch_model("tiny-sdxl", sdxl_folder.parent / "cache").family == ModelFamily(
        family="sdxl", prediction_type="epsilon", resolution=TINY_SDXL_RESOLUTION)
    pipeline = StableDiffusionXLPipeline.from_pretrained(sdxl_folder)
    pipeline.set_progress_bar_config(disable=True)
    (image,) = pipeline("a photo of shrk man", num_inference_steps=2, height=64, width=64,
                        generator=torch.Generator().manual_seed(0)).images
    assert image.size == (64, 64)
    assert pipeline.tokenizer_2.pad_token == "!" and pipeline.tokenizer.pad_token == "<|endoftext|>"
    assert pipeline.unet.config.cross_attention_dim == (pipeline.text_encoder.config.hidden_size
                                                        + pipeline.text_encoder_2.config.hidden_size)


def test_the_sdxl_refiner_is_refused_with_the_reason(sdxl_folder, tmp_path):
    folder = _edited_copy(sdxl_folder, tmp_path / "m", "model_index.json", requires_aesthetics_score=True,
                          _class_name="StableDiffusionXLImg2ImgPipeline", text_encoder=[None, None])
    with pytest.raises(ModelError, match=r"it is the SDXL refiner \(StableDiffusionXLImg2ImgPipeline.*not a "
                                         r"base to train; use stabilityai/stable-diffusion-xl-base-1\.0"):
        detect_family(folder)


def test_sdxl_inpainting_is_refused(sdxl_folder, tmp_path):
    folder = _edited_copy(sdxl_folder, tmp_path / "m", "model_index.json",
                          _class_name="StableDiffusionXLInpaintPipeline")
    with pytest.raises(ModelError, match=r"it is an SDXL inpainting model"):
        detect_family(folder)
    folder = _edited_copy(sdxl_folder, tmp_path / "u", "unet/config.json", in_channels=9)
    with pytest.raises(ModelError, match=r"in_channels=9 \(an inpainting"):
        detect_family(folder)


def test_an_sdxl_without_its_second_text_encoder_s_projection_is_named(sdxl_folder, tmp_path):
    folder = _edited_copy(sdxl_folder, tmp_path / "m", "text_encoder_2/config.json", architectures=["CLIPTextModel"])
    with pytest.raises(ModelError, match=r"text_encoder_2/config\.json shows its text_encoder_2 is CLIPTextModel"):
        detect_family(folder)


def test_text_time_conditioning_outside_sdxl_is_refused(sd2_folder, tmp_path):
    folder = _edited_copy(sd2_folder, tmp_path / "m", "unet/config.json", addition_embed_type="text_time")
    with pytest.raises(ModelError, match=r"addition_embed_type='text_time', as SDXL does\) but the pipeline is not"):
        detect_family(folder)
