"""A model folder whose weights do not fit its configs (a half-finished copy, a part taken from
another model) is refused at the fetch, naming the part, a tensor and both shapes: checked from
the safetensors headers and models built on the meta device, without loading a weight."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dreambooth_core.errors import ModelError
from dreambooth_core.families.base_model import fetch_model
from dreambooth_core.model.folder_weights import check_folder_weights

REPO = Path(__file__).resolve().parents[2]
UNET = "unet/diffusion_pytorch_model.safetensors"
VAE = "vae/diffusion_pytorch_model.safetensors"
TEXT_ENCODER = "text_encoder/model.safetensors"


def cache() -> Path:
    return Path(os.environ["DREAMBOOTH_CACHE"])


@pytest.fixture
def copy(tiny_model_path, tmp_path) -> Path:
    return shutil.copytree(tiny_model_path, tmp_path / "model")


def edit_config(folder: Path, part: str, **changes) -> None:
    config = folder / part / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **changes}))


def rewrite(folder: Path, relative: str, change) -> None:
    tensors = load_file(folder / relative)
    save_file(change(tensors), str(folder / relative))


@pytest.mark.parametrize("spec", ["tiny", "tiny-sd2", "tiny-sdxl"])
def test_every_tiny_family_fits_its_configs(spec):
    model = fetch_model(spec, cache())
    check_folder_weights(Path(model.path), spec, "fix")  # no error


def test_a_unet_config_of_another_width_is_named_with_both_shapes(copy, tmp_path):
    edit_config(copy, "unet", block_out_channels=[64, 128])

    with pytest.raises(ModelError) as caught:
        fetch_model(str(copy), tmp_path / "cache")

    message = str(caught.value)
    assert message.startswith(f"Model folder {str(copy)!r} does not fit together: the unet's weights "
                              f"({UNET}) do not match unet/config.json: tensor conv_in.weight is "
                              "[32, 4, 3, 3] where the config makes [64, 4, 3, 3]")
    assert "more tensors differ" in message and "copy the whole model folder again" in message
    assert "vae" not in message and "text_encoder" not in message


def test_a_text_encoder_from_another_model_and_a_missing_tensor_are_reported_together(copy, tmp_path):
    rewrite(copy, TEXT_ENCODER, lambda t: {**t, "embeddings.token_embedding.weight": torch.zeros(1000, 32)})
    rewrite(copy, VAE, lambda t: {k: v for k, v in t.items() if k != "decoder.conv_out.bias"})

    with pytest.raises(ModelError) as caught:
        fetch_model(str(copy), tmp_path / "cache")

    message = str(caught.value)
    assert ("the text_encoder's weights (text_encoder/model.safetensors) do not match text_encoder/"
            "config.json: tensor embeddings.token_embedding.weight is [1000, 32] where the config makes "
            "[547, 32]") in message
    assert f"the vae's weights ({VAE}) do not match vae/config.json: 1 tensor(s) the config needs are " \
           "missing (decoder.conv_out.bias)" in message


def test_a_half_copied_weights_file_is_named(copy, tmp_path):
    data = (copy / UNET).read_bytes()
    (copy / UNET).write_bytes(data[:len(data) // 2])

    with pytest.raises(ModelError, match=f"{UNET} is cut off: .* \\(truncated"):
        fetch_model(str(copy), tmp_path / "cache")


def test_names_older_libraries_wrote_still_fit(copy, tmp_path):
    """transformers 4.x nests CLIP's weights under text_model.; diffusers before 0.15 named the
    VAE's attention query/key/value/proj_attn. Both load, so neither may be refused."""
    from diffusers import AutoencoderKL

    old = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}

    def old_names(tensors):
        renamed = {}
        for key, value in tensors.items():
            for new, before in old.items():
                key = key.replace(new, before)
            renamed[key] = value
        return renamed

    rewrite(copy, TEXT_ENCODER, lambda t: {f"text_model.{k}": v for k, v in t.items()})
    rewrite(copy, VAE, old_names)
    assert any(".query." in key for key in load_file(copy / VAE))

    assert fetch_model(str(copy), tmp_path / "cache").kind == "local"
    loaded = AutoencoderKL.from_pretrained(copy / "vae").state_dict()
    original = load_file(Path(fetch_model("tiny", cache()).path) / VAE)
    assert loaded.keys() == original.keys() and all(torch.equal(loaded[k], original[k]) for k in original)


@pytest.mark.slow
def test_train_with_a_mixed_folder_ends_in_one_error_paragraph(copy, prefect_api_url, photos, tmp_path):
    edit_config(copy, "unet", block_out_channels=[64, 128])
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "train", "--session", "s", "--storage",
         str(tmp_path / "sessions"), "--model", str(copy), "--photos", str(photos), "--steps", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    error = result.stderr[result.stderr.index("error: "):]
    assert error.count("error: ") == 1 and "Cannot load" not in error
    assert "the unet's weights" in error and "[64, 4, 3, 3]" in error
