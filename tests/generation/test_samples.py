"""Samples: one grid per checkpoint, prompts x images, a function of the weights alone."""

import io

import pytest
import torch
from PIL import Image

from dreambooth_core.families import load_model_parts
from dreambooth_core.generation.samples import SampleSpec, render_samples, sample_prompts, saved_samples
from dreambooth_core.session.dataset_manifest import require_dataset_manifest


def load_parts(model_path: str):
    return load_model_parts(model_path, torch.device("cpu"))


def settings_for(session, extra=(), images=3) -> SampleSpec:
    prompts = sample_prompts(require_dataset_manifest(session).subjects, list(extra))
    return SampleSpec(prompts=prompts, resolution=64, images_per_prompt=images, steps=2)


def test_default_prompts_then_the_users_own(session):
    settings = settings_for(session, ["a painting of {token} {class}", "a red car"])
    assert settings.prompts == ["photo of shrk man", "a painting of shrk man", "a red car"]


def test_the_grid_depends_on_the_weights_alone(session, tiny_model_path):
    settings = settings_for(session, ["a painting of {token}"])
    parts = load_parts(tiny_model_path)
    unet = parts.denoiser
    first = render_samples(session, 100, tiny_model_path, settings, "cpu", trained=parts)
    second = render_samples(session, 200, tiny_model_path, settings, "cpu", trained=parts)
    assert session.read_bytes(first.grid) == session.read_bytes(second.grid)
    assert first.grid == "samples/step-000100.png"

    with torch.no_grad():
        unet.conv_out.bias.add_(0.5)
    changed = render_samples(session, 300, tiny_model_path, settings, "cpu", trained=parts)
    assert session.read_bytes(changed.grid) != session.read_bytes(first.grid)


def test_the_grid_holds_a_row_per_prompt_and_a_column_per_image(session, tiny_model_path):
    settings = settings_for(session, ["a red car"], images=3)
    samples = render_samples(session, 500, tiny_model_path, settings, "cpu")
    grid = Image.open(io.BytesIO(session.read_bytes(samples.grid))).convert("RGB")
    assert grid.size == (3 * 64, 2 * 64)
    assert [len(row) for row in samples.images] == [3, 3]
    for r, row in enumerate(samples.images):
        for c, name in enumerate(row):
            image = Image.open(io.BytesIO(session.read_bytes(name))).convert("RGB")
            assert image.tobytes() == grid.crop((c * 64, r * 64, c * 64 + 64, r * 64 + 64)).tobytes()
    assert samples.images[0][0] != samples.images[0][1]
    assert saved_samples(session, 500, settings) == samples
    assert saved_samples(session, 500, settings.model_copy(update={"seed": 1})) is None


def test_trained_modules_are_used_as_they_are_and_left_as_they_were(session, tiny_model_path):
    parts = load_parts(tiny_model_path)
    unet = parts.denoiser.train()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    render_samples(session, 1, tiny_model_path, settings_for(session, images=1), "cpu", trained=parts)
    assert unet.training and next(unet.parameters()).dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp32_trained_weights_render_beside_the_fp16_base_on_cuda(session, tiny_model_path):
    parts = load_parts(tiny_model_path)
    parts.to(torch.device("cuda"))
    unet = parts.denoiser
    settings = settings_for(session, images=2)
    first = render_samples(session, 1, tiny_model_path, settings, "cuda", trained=parts)
    second = render_samples(session, 2, tiny_model_path, settings, "cuda", trained=parts)
    grid = session.read_bytes(first.grid)
    assert grid == session.read_bytes(second.grid)
    assert next(unet.parameters()).dtype == torch.float32
    assert Image.open(io.BytesIO(grid)).convert("L").getextrema() != (0, 0)  # not NaN-black
