"""The full-model export of FLUX.1 and FLUX.2 [klein]: the transformer in Black Forest Labs' layout
and a diffusers folder, each holding the trained weights (bf16, the precision an fp16 export of
these families is written in), and read back by what users load them with."""

import os
from pathlib import Path

import pytest
import safetensors.torch
import torch

from dreambooth_core.config import TrainingSettings
from dreambooth_core.families import detect_family, load_model_parts
from dreambooth_core.families.base_model import fetch_model
from dreambooth_core.training.trainer import Example, Trainer


def trained(model_path: str):
    parts = load_model_parts(model_path, torch.device("cpu"))
    examples = [Example(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) * 2 - 1,
                        "photo of shrk man", "shrk") for i in range(2)]
    trainer = Trainer(parts, examples, TrainingSettings(seed=1, learning_rate=1e-3, text_encoder_steps=0), 2)
    for step in range(2):
        trainer.step(step)
    return parts


@pytest.fixture(scope="module", params=["tiny-flux", "tiny-klein"])
def exported(request, tmp_path_factory):
    model = fetch_model(request.param, Path(os.environ["DREAMBOOTH_CACHE"]))
    parts = trained(model.path)
    out = tmp_path_factory.mktemp("export")
    written = parts.family.write_full_model(detect_family(model.path), model.path, parts, "shrk", 2,
                                           torch.float16, out)
    return request.param, model.path, parts, out, written


def test_the_files_hold_the_trained_transformer_in_bf16(exported):
    spec, model_path, parts, out, written = exported
    assert written == ["diffusers", "shrk.safetensors"]
    trained_state = parts.denoiser.state_dict()
    read = load_model_parts(model_path, torch.device("cpu"))
    parts.family.read_full_snapshot(read, out / "shrk.safetensors", model_path)
    for name, value in read.denoiser.state_dict().items():
        assert torch.equal(value, trained_state[name].to(torch.bfloat16).float()), name
    header = safetensors.safe_open(str(out / "shrk.safetensors"), "pt")
    assert {header.get_tensor(k).dtype for k in header.keys()} == {torch.bfloat16}
    assert header.metadata()["modelspec.title"] == "shrk"
    folder = load_model_parts(str(out / "diffusers"), torch.device("cpu"))
    assert all(torch.equal(v, read.denoiser.state_dict()[k]) for k, v in folder.denoiser.state_dict().items())


def test_the_transformer_file_is_in_black_forest_labs_layout(exported):
    spec, model_path, parts, out, _ = exported
    keys = safetensors.safe_open(str(out / "shrk.safetensors"), "pt").keys()
    assert "double_blocks.0.img_attn.qkv.weight" in keys and "single_blocks.0.linear1.weight" in keys
    assert "final_layer.adaLN_modulation.1.weight" in keys and not any(k.startswith("transformer") for k in keys)


def test_diffusers_reads_the_klein_file_back_exactly(exported):
    """diffusers' FLUX.1 single-file reader only takes full-size widths (3072): FLUX.1 is read back by
    our own reader above and at full size in test_flux_layout.py; klein's reader takes any width."""
    spec, model_path, parts, out, _ = exported
    if spec != "tiny-klein":
        pytest.skip("diffusers reads FLUX.1 single files of full width only")
    from diffusers import Flux2Transformer2DModel

    loaded = Flux2Transformer2DModel.from_single_file(str(out / "shrk.safetensors"), config=str(out / "diffusers"),
                                                      subfolder="transformer", local_files_only=True,
                                                      torch_dtype=torch.bfloat16)
    expected = parts.denoiser.state_dict()
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, expected[name].to(torch.bfloat16)), name


def test_the_transformer_file_is_a_model_with_its_single_file_config(exported, tmp_path):
    """As model sites ship FLUX: the transformer alone, the rest from --single-file-config."""
    from dreambooth_core.errors import ModelError

    spec, model_path, parts, out, _ = exported
    with pytest.raises(ModelError, match="transformer alone.*--single-file-config"):
        fetch_model(str(out / "shrk.safetensors"), tmp_path / "cache")
    model = fetch_model(str(out / "shrk.safetensors"), tmp_path / "cache", model_config=model_path)
    assert model.kind == "single_file" and model.family == detect_family(model_path)
    converted = load_model_parts(model.path, torch.device("cpu")).denoiser.state_dict()
    for name, value in parts.denoiser.state_dict().items():
        assert torch.equal(converted[name], value.to(torch.bfloat16).float()), name
