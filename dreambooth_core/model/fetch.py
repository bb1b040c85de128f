"""The base model a run starts from, made available as a local diffusers folder.

A model spec is one of:
  "tiny"                         a small random SD 1.x built locally (demos, tests)
  "tiny-sd2", "tiny-sd2-v"       the same for SD 2.x, epsilon (64 px) and v-prediction (96 px)
  "tiny-sdxl"                    the same for SDXL (64 px)
  a local folder                 a diffusers model (it holds model_index.json)
  a local .ckpt / .safetensors   a single-file checkpoint, converted to diffusers once
  an http(s):// URL to one       downloaded once (resumable), then converted
  owner/name                     a Hugging Face hub repo, downloaded once

Everything fetched or converted lives under `cache_dir`, so a second run does
no network call and no conversion.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dreambooth_core.errors import DreamBoothError, ModelError, NetworkError
from dreambooth_core.model.cache import build_once, file_sha256
from dreambooth_core.model.conversion import SINGLE_FILE_SUFFIXES, convert_single_file
from dreambooth_core.model.download import download_file, download_path, is_connection_failure, url_filename
from dreambooth_core.model.family import ModelFamily, detect_family
from dreambooth_core.model.folder_weights import check_folder_weights
from dreambooth_core.model.hub import download_hub_model, looks_like_hub_id
from dreambooth_core.model.tiny import (
    TINY_SD2_VERSIONS,
    TINY_SDXL_VERSION,
    TINY_VERSION,
    build_tiny_model,
    build_tiny_sd2_model,
    build_tiny_sd2_v_model,
    build_tiny_sdxl_model,
)
from dreambooth_core.model.weights_file import weights_file_problem

ACCEPTED_SPECS = (
    '"tiny" (or "tiny-sd2", "tiny-sd2-v", "tiny-sdxl"), a local diffusers folder (with model_index.json), '
    "a local .ckpt or .safetensors file, "
    "an http(s):// URL to a .ckpt or .safetensors file, or a Hugging Face repo id like "
    "stable-diffusion-v1-5/stable-diffusion-v1-5")
_TEXT_SUFFIXES = (".json", ".txt")
TINY_MODELS = ("tiny", "tiny-sd2", "tiny-sd2-v", "tiny-sdxl")
WEIGHT_PARTS = ("unet", "vae", "text_encoder")  # the parts of a folder training and export load
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class LocalModel(BaseModel):
    """A base model ready to load from local disk."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(description="Local diffusers folder (holds model_index.json).")
    digest: str = Field(description="Identifies the model's content; the same on every run.")
    kind: Literal["tiny", "hub", "local", "single_file"] = Field(description="What the spec named.")
    source: str = Field(description="The spec as given.")
    family: ModelFamily = Field(description="Read from the folder's configs: family, prediction "
                                "type and native resolution.")

    @classmethod
    def at(cls, path: str | Path, digest: str, kind: str, source: str) -> "LocalModel":
        """The model in diffusers folder `path`; refused (ModelError) when it is not one this tool trains."""
        return cls(path=str(path), digest=digest, kind=kind, source=source, family=detect_family(path))


def fetch_model(spec: str, cache_dir: Path, revision: str | None = None, model_config: str | None = None,
                hf_token: str | None = None, log: logging.Logger = logging.getLogger("dreambooth")) -> LocalModel:
    """Make the model named by `spec` available locally, fetching or converting it only once.

    `revision` applies to hub repos; `model_config` (a local diffusers folder or a
    hub repo id of the same architecture) to single-file checkpoints.
    """
    if not spec.strip():
        raise ModelError(f"No model given (the model spec {spec!r} is empty). Pass one of: {ACCEPTED_SPECS}.")
    cache_dir = Path(cache_dir).expanduser()
    _warn_unused_options(spec, revision, model_config, log)
    if spec in TINY_MODELS:
        return _fetch_tiny(spec, cache_dir, log)
    if spec.lower().startswith(("http://", "https://")):
        file = _download_single_file(spec, cache_dir, hf_token, log)
        return _from_single_file(file, spec, cache_dir, model_config, hf_token, log)
    local = Path(spec).expanduser()
    if local.is_dir():
        return _from_local_folder(local, spec)
    if local.is_file():
        _check_single_file_name(local.name, spec)
        _check_single_file(local, spec)
        return _from_single_file(local, spec, cache_dir, model_config, hf_token, log)
    if _looks_like_path(spec):
        raise ModelError(f"Model {spec!r}: no such file or folder. Check the path; accepted are {ACCEPTED_SPECS}.")
    if looks_like_hub_id(spec):
        return _from_hub(spec, cache_dir, revision, hf_token, log)
    raise ModelError(f"Model {spec!r} is not a model this tool can find. Accepted are {ACCEPTED_SPECS}.")


def is_transient(exc: BaseException) -> bool:
    """Whether trying again later may succeed: network trouble, never a problem the user must fix."""
    if isinstance(exc, DreamBoothError):
        return False
    return isinstance(exc, NetworkError) or is_connection_failure(exc)


def folder_digest(folder: Path) -> str:
    """A cheap fingerprint of a diffusers folder: config and tokenizer contents, weight names and sizes."""
    sha = hashlib.sha256()
    for file in sorted(p for p in Path(folder).rglob("*") if p.is_file() and not _is_hidden(p, folder)):
        name = file.relative_to(folder).as_posix()
        if file.suffix in _TEXT_SUFFIXES:
            sha.update(f"{name}\0".encode() + file.read_bytes() + b"\0")
        else:
            sha.update(f"{name}\0{file.stat().st_size}\0".encode())
    return sha.hexdigest()


def _fetch_tiny(spec: str, cache_dir: Path, log: logging.Logger) -> LocalModel:
    # Looked up at call time, so that tests can replace a builder.
    version, build = {"tiny": (TINY_VERSION, build_tiny_model),
                      "tiny-sd2": (TINY_SD2_VERSIONS["epsilon"], build_tiny_sd2_model),
                      "tiny-sd2-v": (TINY_SD2_VERSIONS["v_prediction"], build_tiny_sd2_v_model),
                      "tiny-sdxl": (TINY_SDXL_VERSION, build_tiny_sdxl_model)}[spec]
    folder, built = build_once(cache_dir / "tiny" / version, build)
    log.info("%s the %s model in %s", "Built" if built else "Using", spec, folder)
    return LocalModel.at(str(folder.resolve()), version, "tiny", spec)


def _from_hub(spec: str, cache_dir: Path, revision: str | None, hf_token: str | None,
              log: logging.Logger) -> LocalModel:
    folder = download_hub_model(spec, cache_dir / "hub", revision, hf_token, log)
    model = LocalModel.at(str(folder), folder.name, "hub", spec)
    check_folder_weights(folder, spec, f"The repo's files do not belong together as they are in the "
                         f"model cache: delete {folder.parents[1]} to download them again, or pass "
                         "another --revision.")
    return model


def _from_local_folder(folder: Path, spec: str) -> LocalModel:
    if not (folder / "model_index.json").is_file():
        raise ModelError(
            f"Model folder {spec!r} is not a diffusers model: it has no model_index.json. Point at the folder "
            "that holds model_index.json next to unet/, vae/ and text_encoder/, or at a .safetensors/.ckpt file.")
    model = LocalModel.at(str(folder.resolve()), folder_digest(folder), "local", spec)
    for part in WEIGHT_PARTS:
        _require_safetensors(folder, part, spec)
    check_folder_weights(folder, spec, "The folder mixes files of two models, or a copy of it stopped "
                         "halfway: copy the whole model folder again from its source (each part's "
                         "config.json with its weights), or point --model at the original folder.")
    return model


def _require_safetensors(folder: Path, part: str, spec: str) -> None:
    """Diffusers weights are read as safetensors only: a pickle (.bin) can run code when
    loaded, and loading one safely would fail in every step that reads the model."""
    files = [p for p in (folder / part).glob("*") if p.is_file()]
    if any(p.suffix == ".safetensors" for p in files):
        return
    pickles = sorted(p.name for p in files if p.suffix in PICKLE_SUFFIXES)
    found = f"only {', '.join(f'{part}/{name}' for name in pickles)}, a pickle" if pickles else "no weights"
    raise ModelError(
        f"Model folder {spec!r} has {found} for its {part}, and no .safetensors file: this tool "
        "reads a diffusers folder's weights only as safetensors, since a pickle can hide code. "
        "Use a .safetensors version of the model (most hub repos have one), or pass its single "
        ".ckpt file instead (read with weights_only=True, running no code).")


def _from_single_file(file: Path, spec: str, cache_dir: Path, model_config: str | None, hf_token: str | None,
                      log: logging.Logger) -> LocalModel:
    sha256 = file_sha256(file, cache_dir)
    folder = convert_single_file(file, sha256, cache_dir, model_config, hf_token, log)
    return LocalModel.at(str(folder.resolve()), sha256, "single_file", spec)


def _download_single_file(url: str, cache_dir: Path, hf_token: str | None, log: logging.Logger) -> Path:
    _check_single_file_name(url_filename(url), url)
    target = download_path(url, cache_dir / "downloads")
    return download_file(url, target, hf_token, log,
                         check=lambda file: weights_file_problem(file, target.suffix))


def _check_single_file(file: Path, spec: str) -> None:
    """Before any reader sees it: a web page saved under a model's name is named as such."""
    problem = weights_file_problem(file)
    if problem is not None:
        raise ModelError(f"Model {spec!r} is {problem}. Download the file again (its direct download "
                         "link; a site may answer with a login or error page), and pass its path.")


def _check_single_file_name(name: str, spec: str) -> None:
    if not name.lower().endswith(SINGLE_FILE_SUFFIXES):
        raise ModelError(
            f"Model {spec!r} is not a .ckpt or .safetensors file. Accepted are {ACCEPTED_SPECS}. "
            "For a download link without the file name in it, download the file and pass its local path.")


def _looks_like_path(spec: str) -> bool:
    return (spec.startswith(("/", ".", "~")) or "\\" in spec or spec.count("/") > 1
            or spec.lower().endswith(SINGLE_FILE_SUFFIXES))


def _is_hidden(file: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in file.relative_to(folder).parts)


def _warn_unused_options(spec: str, revision: str | None, model_config: str | None, log: logging.Logger) -> None:
    is_url = spec.lower().startswith(("http://", "https://"))
    if revision and (spec in TINY_MODELS or is_url or Path(spec).expanduser().exists()):
        log.warning("revision %r is ignored: it applies only to Hugging Face repo ids, not %r", revision, spec)
    name = url_filename(spec) if is_url else spec
    if model_config and not name.lower().endswith(SINGLE_FILE_SUFFIXES):
        log.warning("model_config %r is ignored: it applies only to .ckpt/.safetensors files, not %r",
                    model_config, spec)
