"""Exported single files load in diffusers and reproduce the trained UNet."""

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from flows.cli import main

pytestmark = pytest.mark.slow  # a CLI or Prefect run each: the full suite only


def fresh(module):
    # Weights in a file's memory map sit at arbitrary alignment, and CPU kernels
    # round differently (~1e-6) for differently aligned weights.
    for tensor in [*module.parameters(), *module.buffers()]:
        tensor.data = tensor.data.clone()
    return module.eval()


@pytest.fixture(scope="module")
def session(prefect_api_url, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    photos = Path(__file__).resolve().parents[2] / "examples" / "photos"
    assert main(["train", "--session", "exp", "--storage", str(root), "--photos", str(photos),
                 "--model", "tiny", "--steps", "3", "--learning-rate", "1e-3",
                 "--export-precision", "fp32"]) == 0
    return root / "exp"


def trained_unet(session: Path, model_path: str):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model_path, subfolder="unet")
    weights = safetensors.torch.load_file(session / "checkpoints" / "step-000003" / "weights.safetensors")
    unet.load_state_dict({k.removeprefix("unet."): v for k, v in weights.items() if k.startswith("unet.")})
    return fresh(unet)


def test_single_file_round_trip_matches_the_trained_unet(session, tiny_model_path):
    from diffusers import UNet2DConditionModel

    loaded = fresh(UNet2DConditionModel.from_single_file(
        str(session / "exp.safetensors"), config=str(session / "diffusers"), subfolder="unet",
        local_files_only=True))
    trained = trained_unet(session, tiny_model_path)
    base = fresh(UNet2DConditionModel.from_pretrained(tiny_model_path, subfolder="unet"))
    sample = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = trained(sample, 500, context).sample
        assert (loaded(sample, 500, context).sample - expected).abs().max() <= 1e-6
        assert (base(sample, 500, context).sample - expected).abs().max() > 1e-4  # it did train


def test_single_file_layout_and_ckpt_agree(session):
    tensors = safetensors.torch.load_file(session / "exp.safetensors")
    prefixes = {key.split(".")[0] for key in tensors}
    assert prefixes == {"model", "first_stage_model", "cond_stage_model"}
    assert any(k.startswith("cond_stage_model.transformer.text_model.") for k in tensors)
    assert all(t.dtype == torch.float32 for t in tensors.values())
    with safetensors.safe_open(str(session / "exp.safetensors"), "pt") as file:
        metadata = file.metadata()
    assert (metadata["modelspec.architecture"], metadata["modelspec.prediction_type"]) == (
        "stable-diffusion-v1", "epsilon")
    ckpt = torch.load(session / "exp.ckpt", weights_only=True)
    assert ckpt["state_dict"].keys() == tensors.keys()
    assert all(torch.equal(ckpt["state_dict"][k], tensors[k]) for k in tensors)


def test_fp16_is_the_default_and_changing_it_re_exports_without_training(session):
    assert main(["train", "--session", "exp", "--storage", str(session.parent),
                 "--export-precision", "fp16"]) == 0
    tensors = safetensors.torch.load_file(session / "exp.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.float16}
    state = json.loads((session / "session.json").read_text())
    assert state["export"]["precision"] == "fp16"
    assert sorted(p.name for p in (session / "checkpoints").iterdir()) == ["step-000003"]
