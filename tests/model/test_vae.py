"""--vae: another VAE in place of the model's own, from a local folder or the hub, used by
training, samples and exports; one of another architecture is refused, naming what differs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch
from web_server import FakeServer, hub_routes

from dreambooth_core.errors import ModelError
from dreambooth_core.families.base_model import LocalModel, fetch_model
from dreambooth_core.model.vae import with_vae
from flows.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def sdxl(cache) -> LocalModel:
    return fetch_model("tiny-sdxl", cache)


def save_vae(sdxl: LocalModel, folder: Path, seed: int = 1, **changes) -> Path:
    """A VAE of the tiny SDXL's architecture with other weights and no fp16 upcast (as the fp16-fix
    VAE is for SDXL), saved as diffusers saves one; `changes` alter its config."""
    from diffusers import AutoencoderKL

    config = {k: v for k, v in AutoencoderKL.load_config(Path(sdxl.path) / "vae").items()
              if not k.startswith("_")}
    torch.manual_seed(seed)
    AutoencoderKL(**{**config, "force_upcast": False, **changes}).save_pretrained(folder)
    return folder


def vae_weights(folder: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(folder / "diffusion_pytorch_model.safetensors")


def test_a_local_vae_replaces_the_model_s_own_and_only_it(sdxl, cache, tmp_path):
    fixed = save_vae(sdxl, tmp_path / "fixed-vae")
    model = with_vae(sdxl, str(fixed), cache)
    assert vae_weights(Path(model.path) / "vae").keys() == vae_weights(fixed).keys()
    assert all(torch.equal(a, b) for a, b in zip(vae_weights(Path(model.path) / "vae").values(),
                                                  vae_weights(fixed).values()))
    for part in ("unet", "text_encoder", "text_encoder_2", "tokenizer_2", "scheduler"):
        assert (Path(model.path) / part).resolve() == (Path(sdxl.path) / part).resolve()
    assert model.family == sdxl.family and model.source == sdxl.source
    assert model.digest != sdxl.digest
    assert with_vae(sdxl, str(fixed), cache) == model  # combined once, then reused
    other = with_vae(sdxl, str(save_vae(sdxl, tmp_path / "other-vae", seed=2)), cache)
    assert other.digest not in (model.digest, sdxl.digest)  # a session never resumes with another VAE
    # a whole diffusers model folder lends its vae/
    assert with_vae(sdxl, model.path, cache).digest == with_vae(sdxl, str(fixed), cache).digest


def test_a_hub_vae_downloads_only_its_config_and_weights(sdxl, cache, hub_at, tmp_path):
    fixed = save_vae(sdxl, tmp_path / "repo")
    (fixed / "sdxl_vae.safetensors").write_bytes((fixed / "diffusion_pytorch_model.safetensors").read_bytes())
    with FakeServer(hub_routes("owner/vae-fix", fixed)) as server:
        hub_at(server.url())
        model = with_vae(sdxl, "owner/vae-fix", cache)
    fetched = {r["path"].rsplit("/", 1)[-1] for r in server.requests if "/resolve/" in r["path"]}
    assert fetched == {"config.json", "diffusion_pytorch_model.safetensors"}
    assert json.loads((Path(model.path) / "vae" / "config.json").read_text())["force_upcast"] is False


@pytest.mark.parametrize("change, named", [({"latent_channels": 16}, "latent_channels 16"),
                                           ({"layers_per_block": 3}, "layers_per_block 3")])
def test_a_vae_of_another_architecture_is_refused_naming_what_differs(sdxl, cache, tmp_path, change, named):
    wrong = save_vae(sdxl, tmp_path / "wrong", **change)
    with pytest.raises(ModelError, match=named) as error:
        with_vae(sdxl, str(wrong), cache)
    assert str(wrong) in str(error.value) and "the model's" in str(error.value)


def test_what_is_not_a_vae_is_refused(sdxl, cache, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="config.json and diffusion_pytorch_model.safetensors"):
        with_vae(sdxl, str(tmp_path / "empty"), cache)
    unet = Path(sdxl.path) / "unet"
    with pytest.raises(ModelError, match="not an AutoencoderKL"):
        with_vae(sdxl, str(unet), cache)
    with pytest.raises(ModelError, match="is a file"):
        with_vae(sdxl, str(unet / "config.json"), cache)


def test_a_missing_vae_folder_is_refused_before_any_server_starts(tmp_path, capsys):
    code = main(["train", "--session", "v", "--storage", str(tmp_path), "--photos", str(REPO / "examples" / "photos"),
                 "--model", "tiny-sdxl", "--vae", "./no-such-vae"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--vae './no-such-vae': no such folder" in err and "Traceback" not in err


@pytest.mark.slow  # a CLI training run
def test_a_session_trains_renders_and_exports_with_the_given_vae(sdxl, prefect_api_url, tmp_path):
    fixed = save_vae(sdxl, tmp_path / "fixed-vae")
    assert main(["train", "--session", "xl", "--storage", str(tmp_path / "s"), "--photos",
                 str(REPO / "examples" / "photos"), "--model", "tiny-sdxl", "--vae", str(fixed),
                 "--steps", "2", "--chunk-steps", "2", "--text-encoder-steps", "0",
                 "--export-precision", "fp32", "--seed", "3"]) == 0
    session = tmp_path / "s" / "xl"
    exported = vae_weights(session / "diffusers" / "vae")
    assert all(torch.equal(exported[k], v) for k, v in vae_weights(fixed).items())
    single = safetensors.torch.load_file(session / "xl.safetensors")
    given = vae_weights(fixed)
    assert torch.equal(single["first_stage_model.decoder.conv_out.weight"], given["decoder.conv_out.weight"])
    assert (session / "samples" / "step-000002.png").is_file()
