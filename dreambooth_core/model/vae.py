"""A VAE in place of the base model's own (--vae), e.g. madebyollin/sdxl-vae-fp16-fix.

The VAE spec is a Hugging Face repo id, or a local folder holding a diffusers VAE
(config.json beside its .safetensors weights) or a whole diffusers model (its vae/).
It must have the architecture of the model's own VAE (it encodes the latents the
UNet was trained on); only its weights and config flags such as `force_upcast`
may differ.

The result is another model folder in the cache: links to every part of the base
model except vae/, which links to the given VAE. Training, samples, class images
and exports read it like any model folder, so the VAE is used everywhere and goes
into the exported full model. Its digest combines both, so a session trained with
one VAE never resumes with another.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from dreambooth_core.errors import ModelError
from dreambooth_core.model.cache import build_once, file_sha256
from dreambooth_core.model.fetch import FetchedModel
from dreambooth_core.model.hub import download_hub_snapshot, looks_like_hub_id

VAE_FILES = ["config.json", "diffusion_pytorch_model.safetensors"]
# What decides the latent space; a VAE that differs here encodes latents the UNet never saw.
ARCHITECTURE = ("_class_name", "latent_channels", "block_out_channels", "layers_per_block",
                "down_block_types", "up_block_types", "in_channels", "out_channels")


def with_vae(model: FetchedModel, spec: str, cache_dir: Path, hf_token: str | None = None,
             log: logging.Logger = logging.getLogger("dreambooth")) -> FetchedModel:
    """`model` with the VAE named by `spec` in place of its own."""
    folder, vae_digest = _fetch_vae(spec, Path(cache_dir), hf_token, log)
    _check_same_architecture(folder, Path(model.path) / "vae", spec, model.source)
    digest = hashlib.sha256(f"{model.digest}\0vae\0{vae_digest}".encode()).hexdigest()
    composed, built = build_once(Path(cache_dir) / "with-vae" / digest[:24],
                                 lambda temp: _link_parts(Path(model.path), folder, temp))
    log.info("%s %s with the VAE %s (%s)", "Combined" if built else "Using", model.source, spec,
             composed)
    return model.model_copy(update={"path": str(composed), "digest": digest})


def _fetch_vae(spec: str, cache_dir: Path, hf_token: str | None,
               log: logging.Logger) -> tuple[Path, str]:
    local = Path(spec).expanduser()
    if local.is_dir():
        folder = local / "vae" if (local / "model_index.json").is_file() else local
        _check_vae_folder(folder, spec)
        return folder.resolve(), _content_digest(folder, cache_dir)
    check_vae_spec(spec)
    folder = download_hub_snapshot(spec, cache_dir / "hub", VAE_FILES, token=hf_token, log=log)
    _check_vae_folder(folder, spec)
    return folder, folder.name  # the snapshot folder is named by its commit


def check_vae_spec(spec: str) -> None:
    """What can be told without the network: a local folder, or the shape of a repo id."""
    local = Path(spec).expanduser()
    if local.is_dir():
        return
    if local.exists():
        raise ModelError(f"--vae {spec!r} is a file; give the folder that holds the VAE's "
                         "config.json and .safetensors weights (a diffusers VAE), or a Hugging "
                         "Face repo id of one.")
    if not looks_like_hub_id(spec) or spec.startswith((".", "/", "~")):
        raise ModelError(f"--vae {spec!r}: no such folder, and not a Hugging Face repo id "
                         "(owner/name). Check the path, or give a repo id like "
                         "madebyollin/sdxl-vae-fp16-fix.")


def _content_digest(folder: Path, cache_dir: Path) -> str:
    """The config and the weights' bytes: a fixed VAE has the same names and sizes as the original."""
    sha = hashlib.sha256((folder / "config.json").read_bytes())
    for weights in sorted(folder.glob("*.safetensors")):
        sha.update(f"\0{weights.name}\0{file_sha256(weights, cache_dir)}".encode())
    return sha.hexdigest()


def _check_vae_folder(folder: Path, spec: str) -> None:
    config = folder / "config.json"
    if not config.is_file() or not any(folder.glob("*.safetensors")):
        raise ModelError(f"--vae {spec!r} holds no diffusers VAE: {folder} needs config.json and "
                         "diffusion_pytorch_model.safetensors. Point at the folder that holds them.")
    kind = _read_config(config, spec).get("_class_name")
    if not str(kind).startswith("AutoencoderKL"):
        raise ModelError(f"--vae {spec!r}: {config} describes a {kind or 'model of no class'}, "
                         "not an AutoencoderKL (a diffusers VAE). Give a VAE made for the model.")


def _check_same_architecture(folder: Path, own: Path, spec: str, model: str) -> None:
    given, expected = _read_config(folder / "config.json", spec), _read_config(own / "config.json", model)
    differ = [f"{key} {given.get(key)!r} (the model's: {expected.get(key)!r})"
              for key in ARCHITECTURE if _norm(given.get(key)) != _norm(expected.get(key))]
    if differ:
        raise ModelError(f"--vae {spec!r} is not a VAE of {model}'s kind: {'; '.join(differ)}. Its "
                         "latents would not be the ones the UNet knows; give a VAE made for this "
                         "model family (SDXL: madebyollin/sdxl-vae-fp16-fix), or leave --vae out.")


def _read_config(path: Path, spec: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"--vae {spec!r}: {path} cannot be read as JSON ({exc}). "
                         "Download the VAE again.") from None


def _norm(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _link_parts(base: Path, vae: Path, target: Path) -> None:
    for entry in base.iterdir():
        if entry.name != "vae" and not entry.name.startswith("."):
            (target / entry.name).symlink_to(entry.absolute())
    (target / "vae").symlink_to(vae.absolute())
