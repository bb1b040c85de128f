"""The metadata every exported .safetensors carries: the model-spec keys and kohya's ss_* training
keys, in the layouts AUTOMATIC1111 and kohya's scripts read, with nothing of this machine in them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import safe_open
from sessions import opened_session, prepare_folder

from dreambooth_core.captions.captioning import caption_dataset
from dreambooth_core.config import TrainingSettings
from dreambooth_core.export.method_files import write_method
from dreambooth_core.export.snapshots import write_snapshot
from dreambooth_core.export.training_metadata import TrainingRecord, public_name, training_record
from dreambooth_core.families import family_of, load_model_parts
from dreambooth_core.families.base_model import fetch_model
from dreambooth_core.training.methods import set_up_method

REPO = Path(__file__).resolve().parents[2]
CAPTIONS = {"shrk": ["photo of shrk man, smiling", "photo of shrk man, outdoors", "photo of shrk man"]}
# AUTOMATIC1111 (extensions-builtin/Lora/network.py) tells the base model of a network by these.
A1111_VERSION = {"tiny": ("sd_v1", "False"), "tiny-sd2-v": ("sd_v2_v", "True"),
                 "tiny-sdxl": ("sdxl_base_v1-0", "False")}
ARCHITECTURE = {"tiny": "stable-diffusion-v1", "tiny-sd2-v": "stable-diffusion-v2-768-v",
                "tiny-sdxl": "stable-diffusion-xl-v1-base"}


def record(method: str, **settings) -> TrainingRecord:
    training = TrainingSettings(method=method, lora_rank=4, lora_alpha=2, steps=6, **settings)
    return TrainingRecord(base_model="tiny", vae=None, training=training, gradient_checkpointing=False,
                          cache_latents=True, total_steps=6, resolution=64, captions=CAPTIONS, class_images=0)


def metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as file:
        return file.metadata()


def exported(model: str, method: str, out: Path, **settings) -> dict[str, dict[str, str]]:
    local = fetch_model(model, out / "cache")
    parts = load_model_parts(local.path, torch.device("cpu"))
    trainables = set_up_method(parts, TrainingSettings(method=method, lora_rank=4, lora_alpha=2),
                               list(CAPTIONS))
    files = out / "files"
    files.mkdir()
    write_method(method, local.path, local.family, parts, trainables, "s", 6, torch.float16, files,
                 record(method, **settings))
    return {p.relative_to(files).as_posix(): metadata(p) for p in files.rglob("*.safetensors")}


@pytest.mark.parametrize("model, method", [("tiny", "dreambooth"), ("tiny-sd2-v", "lora"),
                                           ("tiny-sdxl", "lora"), ("tiny", "textual-inversion")])
def test_every_export_says_how_it_was_trained_in_the_keys_a1111_and_kohya_read(model, method, tmp_path):
    files = exported(model, method, tmp_path)
    stamped = {name: meta for name, meta in files.items() if not name.startswith("diffusers/")}
    assert stamped, files
    version, v2 = A1111_VERSION[model]
    for name, meta in stamped.items():
        assert meta["ss_base_model_version"] == version and meta["ss_v2"] == v2, name
        suffix = {"dreambooth": "", "lora": "/lora", "textual-inversion": "/textual-inversion"}[method]
        assert meta["modelspec.architecture"] == ARCHITECTURE[model] + suffix
        assert meta["modelspec.resolution"] == "64x64" and meta["ss_resolution"] == "(64, 64)"
        assert meta["ss_num_train_images"] == "3" and meta["ss_max_train_steps"] == "6"
        assert meta["ss_steps"] == "6" and meta["ss_sd_model_name"] == "tiny"
        assert json.loads(meta["ss_dataset_dirs"]) == {"shrk": {"n_repeats": 1, "img_count": 3}}
        # AUTOMATIC1111 lists the training tags from this: {dataset folder: {tag: count}}.
        tags = {"shrk": {"photo of shrk man": 3, "smiling": 1, "outdoors": 1}}
        assert json.loads(meta["ss_tag_frequency"]) == tags
        assert meta["modelspec.trigger_phrase"] == "shrk"
        assert meta["ss_output_name"] == meta["modelspec.title"]
        if method == "lora":
            assert (meta["ss_network_module"], meta["ss_network_dim"], meta["ss_network_alpha"]) == \
                ("networks.lora", "4", "2")
    # The tensors are as written, and the hash AUTOMATIC1111 shows is of their bytes.
    main = tmp_path / "files" / ("s.safetensors" if method != "textual-inversion" else "shrk.safetensors")
    raw = main.read_bytes()
    data = raw[8 + int.from_bytes(raw[:8], "little"):]
    assert metadata(main)["sshs_model_hash"] == hashlib.sha256(data).hexdigest()
    assert all(torch.isfinite(t).all() for t in safetensors.torch.load_file(main).values())


def test_a_full_models_diffusers_parts_keep_their_own_headers(tmp_path):
    files = exported("tiny", "dreambooth", tmp_path)
    assert files["diffusers/unet/diffusion_pytorch_model.safetensors"] == {"format": "pt"}
    assert files["s.safetensors"]["modelspec.prediction_type"] == "epsilon"


def test_the_training_keys_follow_the_settings(tmp_path):
    files = exported("tiny", "lora", tmp_path, learning_rate=3e-4, lr_schedule="cosine",
                     optimizer="adamw-8bit", offset_noise=0.05, seed=7)
    meta = files["s.safetensors"]
    assert (meta["ss_learning_rate"], meta["ss_lr_scheduler"], meta["ss_seed"]) == ("0.0003", "cosine", "7")
    assert meta["ss_optimizer"] == "bitsandbytes.optim.AdamW8bit" and meta["ss_noise_offset"] == "0.05"
    assert "ss_min_snr_gamma" not in meta  # off: kohya's None is left out


def test_nothing_of_this_machine_goes_into_the_files(tmp_path, tiny_model_path, monkeypatch):
    """A local base model is named by its folder; the storage, the photos' folder and a token are nowhere."""
    monkeypatch.setenv("HF_TOKEN", "hf_secretsecretsecret")
    session = opened_session(tmp_path / "sessions", model=tiny_model_path, method="lora", steps=4)
    prepare_folder(session, REPO / "examples" / "photos", 64)
    local = fetch_model("tiny", tmp_path / "cache")
    caption_dataset(session, next(iter(family_of(local.family).token_judges(local.path).values())),
                    session_config(session).captions)
    trained = training_record(session)
    assert trained.base_model == Path(tiny_model_path).name and trained.total_steps == 4
    parts = load_model_parts(local.path, torch.device("cpu"))
    trainables = set_up_method(parts, trained.training, list(trained.captions))
    written = write_snapshot(session, local.path, local.family, "lora", parts, trainables, 2, keep=2)
    header = metadata(Path(session.url) / written[0])
    text = json.dumps(header)
    for secret in ("hf_secretsecretsecret", str(tmp_path), tiny_model_path, str(REPO)):
        assert secret not in text
    assert header["ss_steps"] == "2" and header["ss_sd_model_name"] == Path(tiny_model_path).name


def session_config(session):
    from dreambooth_core.session.state import stored_config

    return stored_config(session)


@pytest.mark.parametrize("given, public", [
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
    ("/home/me/models/realistic.safetensors", "realistic.safetensors"),
    ("https://example.com/files/model.safetensors?token=abc", "model.safetensors"),
    ("tiny", "tiny")])
def test_a_base_model_is_named_without_local_paths_or_url_queries(given, public):
    assert public_name(given) == public
