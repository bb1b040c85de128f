"""The files of the base model a run starts from, made available as a local diffusers folder.

A model spec is one of:
  a tiny model's name            built locally (dreambooth_core.families lists them: "tiny", ...)
  a local folder                 a diffusers model (it holds model_index.json)
  a local .ckpt / .safetensors   a single-file checkpoint, converted to diffusers once
  an http(s):// URL to one       downloaded once (resumable), then converted
  owner/name                     a Hugging Face hub repo, downloaded once

Everything fetched or converted lives under `cache_dir`, so a second run does
no network call and no conversion.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from dreambooth_core.errors import DreamBoothError, ModelError, NetworkError
from dreambooth_core.model.cache import build_once, file_sha256
from dreambooth_core.model.conversion import SINGLE_FILE_SUFFIXES, Converter, convert_single_file
from dreambooth_core.model.download import download_file, download_path, is_connection_failure, url_filename
from dreambooth_core.model.folder_weights import check_folder_weights
from dreambooth_core.model.hub import download_hub_model, looks_like_hub_id
from dreambooth_core.model.weights_file import weights_file_problem

_TEXT_SUFFIXES = (".json", ".txt")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
Kind = Literal["tiny", "hub", "local", "single_file"]


class FetchedModel(BaseModel):
    """A base model's diffusers folder on local disk, before its family is read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(description="Local diffusers folder (holds model_index.json).")
    digest: str = Field(description="Identifies the model's content; the same on every run.")
    kind: Kind = Field(description="What the spec named.")
    source: str = Field(description="The spec as given.")


@dataclass(frozen=True)
class ModelSources:
    """What fetching needs from the families: the tiny models' builders (spec -> (version, build)),
    the check of a folder's architecture (raises ModelError for one the tool cannot train), the
    converter of a single file's weights, and what to tell users they may pass."""

    tiny: Mapping[str, tuple[str, Callable[[Path], Path]]]
    recognise: Callable[[Path], object]
    choose_converter: Callable[[Path, Path], Converter]
    accepted: str


def fetch_model_files(spec: str, cache_dir: Path, sources: ModelSources,
                      revision: str | None = None,
                      model_config: str | None = None, hf_token: str | None = None,
                      log: logging.Logger = logging.getLogger("dreambooth")) -> FetchedModel:
    """Make the model named by `spec` available locally, fetching or converting it only once.

    `revision` applies to hub repos; `model_config` (a local diffusers folder or a
    hub repo id of the same architecture) to single-file checkpoints.
    """
    if not spec.strip():
        raise ModelError(f"No model given (the model spec {spec!r} is empty). Pass one of: "
                         f"{sources.accepted}.")
    cache_dir = Path(cache_dir).expanduser()
    _warn_unused_options(spec, revision, model_config, sources, log)
    if spec in sources.tiny:
        return _fetch_tiny(spec, cache_dir, sources, log)
    if spec.lower().startswith(("http://", "https://")):
        file = _download_single_file(spec, cache_dir, hf_token, sources, log)
        return _from_single_file(file, spec, cache_dir, model_config, hf_token, sources, log)
    local = Path(spec).expanduser()
    if local.is_dir():
        return _from_local_folder(local, spec, sources)
    if local.is_file():
        _check_single_file_name(local.name, spec, sources)
        _check_single_file(local, spec)
        return _from_single_file(local, spec, cache_dir, model_config, hf_token, sources, log)
    if _looks_like_path(spec):
        raise ModelError(f"Model {spec!r}: no such file or folder. Check the path; accepted are "
                         f"{sources.accepted}.")
    if looks_like_hub_id(spec):
        return _from_hub(spec, cache_dir, revision, hf_token, sources, log)
    raise ModelError(f"Model {spec!r} is not a model this tool can find. Accepted are "
                     f"{sources.accepted}.")


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


def _fetch_tiny(spec: str, cache_dir: Path, sources: ModelSources,
                log: logging.Logger) -> FetchedModel:
    version, build = sources.tiny[spec]
    folder, built = build_once(cache_dir / "tiny" / version, build)
    log.info("%s the %s model in %s", "Built" if built else "Using", spec, folder)
    return FetchedModel(path=str(folder.resolve()), digest=version, kind="tiny", source=spec)


def _from_hub(spec: str, cache_dir: Path, revision: str | None, hf_token: str | None,
              sources: ModelSources,
              log: logging.Logger) -> FetchedModel:
    folder = download_hub_model(spec, cache_dir / "hub", revision, hf_token, log)
    sources.recognise(folder)
    check_folder_weights(folder, spec, "The repo's files do not belong together as they are in the "
                                       f"model cache: delete {folder.parents[1]} to download them "
                                       "again, or pass another --revision.")
    return FetchedModel(path=str(folder), digest=folder.name, kind="hub", source=spec)


def _from_local_folder(folder: Path, spec: str, sources: ModelSources) -> FetchedModel:
    if not (folder / "model_index.json").is_file():
        raise ModelError(
            f"Model folder {spec!r} is not a diffusers model: it has no model_index.json. Point at "
            "the folder that holds model_index.json beside each part's folder, or at a "
            ".safetensors/.ckpt file.")
    sources.recognise(folder)
    for part in weight_parts(folder):
        _require_safetensors(folder, part, spec)
    check_folder_weights(folder, spec, "The folder mixes files of two models, or a copy of it "
                                       "stopped halfway: copy the whole model folder again from "
                                       "its source (each part's config.json with its weights), or "
                                       "point --model at the original folder.")
    return FetchedModel(path=str(folder.resolve()), digest=folder_digest(folder), kind="local",
                        source=spec)


def weight_parts(folder: Path) -> list[str]:
    """The parts of a diffusers folder that hold weights: the denoiser, the VAE, the text encoders
    (model_index.json's diffusers and transformers components with a config.json)."""
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    return sorted(name for name, entry in index.items() if isinstance(entry, list) and len(entry) == 2
                  and entry[0] in ("diffusers", "transformers") and (folder / name / "config.json").is_file())


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


def _from_single_file(file: Path, spec: str, cache_dir: Path, model_config: str | None,
                      hf_token: str | None,
                      sources: ModelSources, log: logging.Logger) -> FetchedModel:
    sha256 = file_sha256(file, cache_dir)
    folder = convert_single_file(file, sha256, cache_dir, sources.choose_converter, model_config,
                                 hf_token, log)
    sources.recognise(folder)
    return FetchedModel(path=str(folder.resolve()), digest=sha256, kind="single_file", source=spec)


def _download_single_file(url: str, cache_dir: Path, hf_token: str | None, sources: ModelSources,
                          log: logging.Logger) -> Path:
    _check_single_file_name(url_filename(url), url, sources)
    target = download_path(url, cache_dir / "downloads")
    return download_file(url, target, hf_token, log,
                         check=lambda file: weights_file_problem(file, target.suffix))


def _check_single_file(file: Path, spec: str) -> None:
    """Before any reader sees it: a web page saved under a model's name is named as such."""
    problem = weights_file_problem(file)
    if problem is not None:
        raise ModelError(f"Model {spec!r} is {problem}. Download the file again (its direct "
                         "download link; a site may answer with a login or error page), and pass "
                         "its path.")


def _check_single_file_name(name: str, spec: str, sources: ModelSources) -> None:
    if not name.lower().endswith(SINGLE_FILE_SUFFIXES):
        raise ModelError(
            f"Model {spec!r} is not a .ckpt or .safetensors file. Accepted are {sources.accepted}. "
            "For a download link without the file name in it, download the file and pass its local "
            "path.")


def _looks_like_path(spec: str) -> bool:
    return (spec.startswith(("/", ".", "~")) or "\\" in spec or spec.count("/") > 1
            or spec.lower().endswith(SINGLE_FILE_SUFFIXES))


def _is_hidden(file: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in file.relative_to(folder).parts)


def _warn_unused_options(spec: str, revision: str | None, model_config: str | None,
                         sources: ModelSources,
                         log: logging.Logger) -> None:
    is_url = spec.lower().startswith(("http://", "https://"))
    if revision and (spec in sources.tiny or is_url or Path(spec).expanduser().exists()):
        log.warning("revision %r is ignored: it applies only to Hugging Face repo ids, not %r",
                    revision, spec)
    name = url_filename(spec) if is_url else spec
    if model_config and not name.lower().endswith(SINGLE_FILE_SUFFIXES):
        log.warning("model_config %r is ignored: it applies only to .ckpt/.safetensors files, not "
                    "%r", model_config, spec)
