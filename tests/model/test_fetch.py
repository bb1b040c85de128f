"""fetch_model: each kind of model spec, the cache that makes a second run free,
and errors that tell the user what to do (and whether trying again helps).

Network tests talk to HTTP servers on 127.0.0.1 started here; nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from web_server import COMMIT, FakeServer, closed_port_url, hub_routes

from dreambooth_core.errors import ModelError, NetworkError
import dataclasses

from dreambooth_core.families import TINY_MODELS
from dreambooth_core.families.stable_diffusion import StableDiffusion
from dreambooth_core.model.download import download_path
from dreambooth_core.families.base_model import LocalModel, fetch_model
from dreambooth_core.model.fetch import is_transient
from dreambooth_core.model.safetensors_files import save_single_file
from dreambooth_core.families.sd_single_file import to_single_file_state
from dreambooth_core.families.sd_tiny import TINY_VERSION


def load_unet_state(folder: str) -> dict:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(Path(folder) / "unet").state_dict()


def assert_same_weights(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> LocalModel:
    return fetch_model("tiny", tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def single_files(tiny, tmp_path_factory) -> dict[str, Path]:
    """The tiny model as single files, the way other tools save them."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder, out = Path(tiny.path), tmp_path_factory.mktemp("single")
    state = to_single_file_state(UNet2DConditionModel.from_pretrained(folder / "unet"),
                                 AutoencoderKL.from_pretrained(folder / "vae"),
                                 CLIPTextModel.from_pretrained(folder / "text_encoder"))
    save_single_file(state, out / "tiny.safetensors", "safetensors")
    save_single_file(state, out / "tiny.ckpt", "ckpt", global_step=7)
    torch.save(dict(state), out / "bare.ckpt")  # a bare dict of tensors, no "state_dict" wrapper
    return {"safetensors": out / "tiny.safetensors", "ckpt": out / "tiny.ckpt", "bare ckpt": out / "bare.ckpt"}


# --- tiny and local folders -------------------------------------------------------------

def test_tiny_is_built_once_then_reused(tiny, monkeypatch):
    index = Path(tiny.path) / "model_index.json"
    built_at = index.stat().st_mtime_ns
    monkeypatch.setitem(TINY_MODELS, "tiny", dataclasses.replace(
        TINY_MODELS["tiny"], build=lambda folder: pytest.fail("rebuilt the tiny model")))

    again = fetch_model("tiny", Path(tiny.path).parents[1])

    assert again == tiny
    assert (tiny.kind, tiny.digest) == ("tiny", TINY_VERSION)
    assert index.stat().st_mtime_ns == built_at


def test_local_diffusers_folder_is_used_in_place(tiny, tmp_path):
    model = fetch_model(tiny.path, tmp_path / "cache")

    assert (model.path, model.kind, model.source) == (tiny.path, "local", tiny.path)
    assert fetch_model(tiny.path, tmp_path / "cache").digest == model.digest
    assert not (tmp_path / "cache").exists()


def test_local_folder_digest_follows_its_configs(tiny, tmp_path):
    import shutil

    copy = shutil.copytree(tiny.path, tmp_path / "model")
    before = fetch_model(str(copy), tmp_path / "cache").digest
    config = copy / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "prediction_type": "v_prediction"}))

    assert fetch_model(str(copy), tmp_path / "cache").digest != before


class _RunsCode:
    """Unpickling this calls os.makedirs(marker): the proof that a pickle ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


@pytest.mark.parametrize("part", ["unet", "text_encoder"])
def test_a_folder_whose_weights_are_a_pickle_is_refused_once_unrun(part, tiny, tmp_path):
    import pickle
    import shutil

    copy = shutil.copytree(tiny.path, tmp_path / "model")
    for weights in (copy / part).glob("*.safetensors"):
        weights.unlink()
    marker = tmp_path / "code-ran"
    (copy / part / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps({"w": _RunsCode(marker)}))

    with pytest.raises(ModelError) as caught:
        fetch_model(str(copy), tmp_path / "cache")
    message = str(caught.value)
    assert f"only {part}/diffusion_pytorch_model.bin, a pickle" in message
    assert "only as safetensors" in message and ".ckpt file" in message
    assert not marker.exists()


def test_an_unsupported_kind_is_refused_at_the_fetch(tiny, tmp_path):
    import shutil

    copy = shutil.copytree(tiny.path, tmp_path / "inpainting")
    config = copy / "unet" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "in_channels": 9}))
    with pytest.raises(ModelError, match="in_channels=9 \\(an inpainting"):
        fetch_model(str(copy), tmp_path / "cache")


# --- single files -----------------------------------------------------------------------

@pytest.mark.parametrize("form", ["safetensors", "ckpt", "bare ckpt"])
def test_single_file_converts_to_the_same_weights(form, tiny, single_files, tmp_path, monkeypatch):
    file = single_files[form]

    model = fetch_model(str(file), tmp_path, model_config=tiny.path)

    assert model.kind == "single_file"
    assert model.digest == hashlib.sha256(file.read_bytes()).hexdigest()
    assert (Path(model.path) / "model_index.json").is_file()
    assert_same_weights(load_unet_state(tiny.path), load_unet_state(model.path))
    monkeypatch.setattr(StableDiffusion, "convert_single_file", lambda *a: pytest.fail("converted again"))
    assert fetch_model(str(file), tmp_path, model_config=tiny.path) == model


class Payload:
    """Unpickling this runs a shell command: what a booby-trapped .ckpt does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Callback:
    """A custom class, as in .ckpt files saved with training-framework objects."""


@pytest.mark.parametrize("extra", ["os.system", "custom class"])
def test_ckpt_that_needs_more_than_weights_is_refused_unrun(extra, tiny, tmp_path):
    marker = tmp_path / "payload-ran"
    ckpt = tmp_path / "trap.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)},
                "callbacks": Payload(marker) if extra == "os.system" else Callback()}, ckpt)

    with pytest.raises(ModelError, match="not a plain weights file") as caught:
        fetch_model(str(ckpt), tmp_path / "cache", model_config=tiny.path)

    assert str(ckpt) in str(caught.value)
    assert not is_transient(caught.value)
    assert not marker.exists()


def test_truncated_ckpt_is_named(single_files, tiny, tmp_path):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(single_files["ckpt"].read_bytes()[:4000])

    with pytest.raises(ModelError, match="truncated") as caught:
        fetch_model(str(broken), tmp_path / "cache", model_config=tiny.path)
    assert str(broken) in str(caught.value)


def test_single_file_without_config_offline_says_to_pass_one(single_files, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    with pytest.raises(ModelError, match="--single-file-config") as caught:
        fetch_model(str(single_files["safetensors"]), tmp_path)
    assert "local diffusers folder" in str(caught.value)
    assert not is_transient(caught.value)


# --- URLs -------------------------------------------------------------------------------

def test_url_is_downloaded_once(single_files, tiny, tmp_path):
    data = single_files["safetensors"].read_bytes()
    with FakeServer({"/models/tiny.safetensors": data}) as server:
        url = server.url("/models/tiny.safetensors")
        model = fetch_model(url, tmp_path, model_config=tiny.path, hf_token="hf_secret")
        requests = len(server.requests)
        again = fetch_model(url, tmp_path, model_config=tiny.path, hf_token="hf_secret")

    assert requests == 1 and len(server.requests) == 1
    assert server.requests[0]["auth"] is None  # a Hugging Face token is only sent to Hugging Face
    assert again == model
    assert (model.kind, model.source) == ("single_file", url)
    assert model.digest == hashlib.sha256(data).hexdigest()
    assert_same_weights(load_unet_state(tiny.path), load_unet_state(model.path))


def test_interrupted_download_resumes_where_it_stopped(single_files, tiny, tmp_path):
    data = single_files["safetensors"].read_bytes()
    half = len(data) // 2
    with FakeServer({"/tiny.safetensors": data}) as server:
        url = server.url("/tiny.safetensors")
        server.cut_at = half
        with pytest.raises(NetworkError) as caught:
            fetch_model(url, tmp_path, model_config=tiny.path)
        assert is_transient(caught.value) and url in str(caught.value)

        server.cut_at = None
        model = fetch_model(url, tmp_path, model_config=tiny.path)

    assert [r["range"] for r in server.requests] == [None, f"bytes={half}-"]
    assert server.requests[1]["sent"] == len(data) - half
    assert model.digest == hashlib.sha256(data).hexdigest()


def test_partial_download_restarts_when_server_cannot_resume(single_files, tiny, tmp_path):
    data = single_files["safetensors"].read_bytes()
    with FakeServer({"/tiny.safetensors": data}, ranges=False) as server:
        url = server.url("/tiny.safetensors")
        part = download_path(url, tmp_path / "downloads").with_suffix(".safetensors.part")
        part.parent.mkdir(parents=True)
        part.write_bytes(b"stale bytes from another file")
        model = fetch_model(url, tmp_path, model_config=tiny.path)

    assert server.bytes_sent() == len(data)
    assert model.digest == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("status", "error", "transient", "says"), [
    (503, NetworkError, True, "Try again later"),
    (429, NetworkError, True, "Try again later"),
    (404, ModelError, False, "not found"),
    (403, ModelError, False, "token"),
    (401, ModelError, False, "token"),
])
def test_http_errors_are_classified(status, error, transient, says, tmp_path):
    with FakeServer({"/m.safetensors": status}) as server:
        url = server.url("/m.safetensors")
        with pytest.raises(error, match=says) as caught:
            fetch_model(url, tmp_path)

    assert url in str(caught.value)
    assert is_transient(caught.value) is transient


def test_web_page_instead_of_a_file_is_refused(tmp_path):
    page = (200, {"Content-Type": "text/html; charset=utf-8"}, b"<html>Please log in</html>")
    with FakeServer({"/model.safetensors": page}) as server:
        with pytest.raises(ModelError, match="web page"):
            fetch_model(server.url("/model.safetensors"), tmp_path)

    assert not list((tmp_path / "downloads").rglob("model.safetensors"))


PAGE = b"<!DOCTYPE html>\n<html><body>Please log in to download this model</body></html>"


def test_a_web_page_sent_as_the_file_is_not_cached_and_the_next_run_asks_again(single_files, tiny, tmp_path):
    """A site that sends its login page without saying it is HTML: refused, and not kept."""
    page = (200, {"Content-Type": "application/octet-stream"}, PAGE)
    with FakeServer({"/model.safetensors": page}) as server:
        url = server.url("/model.safetensors")
        with pytest.raises(ModelError) as caught:
            fetch_model(url, tmp_path, model_config=tiny.path)
        server.routes["/model.safetensors"] = single_files["safetensors"].read_bytes()  # the site is fixed
        model = fetch_model(url, tmp_path, model_config=tiny.path)

    message = str(caught.value)
    assert "not a safetensors file but an HTML page" in message and "header too large" not in message
    assert str(download_path(url, tmp_path / "downloads").parent) in message
    assert "next run downloads" in message
    assert len(server.requests) == 2  # the second run asked the server again
    assert model.digest == hashlib.sha256(single_files["safetensors"].read_bytes()).hexdigest()


def test_a_bad_file_an_older_run_left_in_the_cache_is_discarded_and_fetched_again(single_files, tiny,
                                                                                  tmp_path, caplog):
    with FakeServer({"/model.safetensors": single_files["safetensors"].read_bytes()}) as server:
        url = server.url("/model.safetensors")
        cached = download_path(url, tmp_path / "downloads")
        cached.parent.mkdir(parents=True)
        cached.write_bytes(PAGE)
        with caplog.at_level("WARNING", logger="dreambooth"):
            model = fetch_model(url, tmp_path, model_config=tiny.path)

    assert len(server.requests) == 1
    assert f"{cached}, downloaded before from {url}, is not a safetensors file but an HTML page" \
        in caplog.text
    assert model.digest == hashlib.sha256(single_files["safetensors"].read_bytes()).hexdigest()


def test_a_web_page_sent_as_a_ckpt_is_named_as_such_not_as_hidden_code(tiny, tmp_path):
    with FakeServer({"/model.ckpt": (200, {"Content-Type": "application/octet-stream"}, PAGE)}) as server:
        with pytest.raises(ModelError) as caught:
            fetch_model(server.url("/model.ckpt"), tmp_path, model_config=tiny.path)
    message = str(caught.value)
    assert "not a PyTorch checkpoint but an HTML page (it starts with '<!DOCTYPE html> <html>" in message
    assert "code" not in message
    assert {p.name for p in (tmp_path / "downloads").rglob("model.ckpt*")} == {"model.ckpt.lock"}


@pytest.mark.parametrize("name", ["model.ckpt", "model.safetensors"])
def test_a_local_web_page_saved_as_a_model_is_named_as_such(name, tiny, tmp_path):
    (tmp_path / name).write_bytes(PAGE)
    with pytest.raises(ModelError, match="but an HTML page") as caught:
        fetch_model(str(tmp_path / name), tmp_path / "cache", model_config=tiny.path)
    assert str(tmp_path / name) in str(caught.value) and "code" not in str(caught.value)
    assert (tmp_path / name).read_bytes() == PAGE  # the user's own file is left alone


def test_refused_connection_is_transient(tmp_path):
    url = closed_port_url("/m.safetensors")

    with pytest.raises(NetworkError) as caught:
        fetch_model(url, tmp_path)
    assert url in str(caught.value) and is_transient(caught.value)


def test_url_to_something_else_than_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(ModelError, match=r"\.ckpt or \.safetensors"):
        fetch_model("https://example.com/model.zip", tmp_path)


# --- Hugging Face hub -------------------------------------------------------------------

def test_hub_model_downloads_diffusers_files_once(tiny, hub_at, tmp_path, monkeypatch):
    import huggingface_hub.constants

    with FakeServer(hub_routes("owner/tiny", Path(tiny.path))) as server:
        hub_at(server.url())
        model = fetch_model("owner/tiny", tmp_path)
        requests = len(server.requests)
        again = fetch_model("owner/tiny", tmp_path)

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    offline = fetch_model("owner/tiny", tmp_path)

    assert (model.kind, model.digest, model.source) == ("hub", COMMIT, "owner/tiny")
    assert len(server.requests) == requests  # the second call asked nothing
    assert again == model == offline
    fetched = {r["path"].rsplit(f"{COMMIT}/", 1)[-1] for r in server.requests if "/resolve/" in r["path"]}
    assert "unet/diffusion_pytorch_model.safetensors" in fetched
    assert not fetched & {"unet/diffusion_pytorch_model.fp16.safetensors", "safety_checker/model.safetensors",
                          "v1-5-pruned.ckpt"}
    assert_same_weights(load_unet_state(tiny.path), load_unet_state(model.path))


@pytest.mark.parametrize(("answer", "error", "says"), [
    ((404, {"X-Error-Code": "RepoNotFound"}, b""), ModelError, "Check the id"),
    ((403, {"X-Error-Code": "GatedRepo"}, b""), ModelError, "token"),
    ((404, {"X-Error-Code": "RevisionNotFound"}, b""), ModelError, "--revision"),
    ((503, {}, b""), NetworkError, "try again"),
])
def test_hub_errors_say_what_to_fix(answer, error, says, hub_at, tmp_path):
    with FakeServer({"/api/models/owner/model/revision/main": answer}) as server:
        hub_at(server.url())
        with pytest.raises(error, match=says) as caught:
            fetch_model("owner/model", tmp_path)

    assert "owner/model" in str(caught.value)
    assert is_transient(caught.value) is (error is NetworkError)


def test_hub_offline_mode_without_cache_is_not_retried(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    with pytest.raises(ModelError, match="HF_HUB_OFFLINE") as caught:
        fetch_model("owner/model", tmp_path)
    assert "owner/model" in str(caught.value) and not is_transient(caught.value)


def test_unreachable_hub_is_transient(hub_at, tmp_path):
    hub_at(closed_port_url(""))

    with pytest.raises(NetworkError, match="owner/model") as caught:
        fetch_model("owner/model", tmp_path)
    assert is_transient(caught.value)


# --- specs that name nothing ------------------------------------------------------------

@pytest.mark.parametrize("spec", ["./no/such/folder", "/no/such/model.safetensors", "missing.ckpt"])
def test_missing_local_path_is_named(spec, tmp_path):
    with pytest.raises(ModelError, match="no such file or folder") as caught:
        fetch_model(spec, tmp_path)
    assert repr(spec) in str(caught.value)


@pytest.mark.parametrize("spec", ["not a model!", "", "owner/name/extra:part"])
def test_unrecognised_spec_lists_what_is_accepted(spec, tmp_path):
    with pytest.raises(ModelError, match="Hugging Face repo id") as caught:
        fetch_model(spec, tmp_path)
    assert repr(spec) in str(caught.value)


def test_folder_without_model_index_is_refused(tmp_path):
    (tmp_path / "weights").mkdir()

    with pytest.raises(ModelError, match="model_index.json"):
        fetch_model(str(tmp_path / "weights"), tmp_path / "cache")


@pytest.mark.parametrize(("exc", "transient"), [
    (ConnectionResetError(), True), (TimeoutError(), True), (NetworkError("x"), True),
    (ModelError("x"), False), (ValueError("x"), False), (RuntimeError("x"), False),
])
def test_is_transient(exc, transient):
    assert is_transient(exc) is transient
