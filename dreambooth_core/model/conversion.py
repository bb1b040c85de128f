"""Turning a single-file checkpoint (.ckpt or .safetensors) into a diffusers folder.

A `.ckpt` is a pickle, and unpickling can run any code the file's author chose.
It is read only with torch's weights-only loader, which accepts tensors and
plain containers and refuses everything else, then copied to `.safetensors`
before diffusers sees it. Which family's converter writes the folder is decided
from the weights' key names (`choose`, given by dreambooth_core.families).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Callable

from dreambooth_core.errors import DreamBoothError, ModelError, NetworkError
from dreambooth_core.model.cache import build_once
from dreambooth_core.model.hub import caused_by, network_failure_in, root_cause

SINGLE_FILE_SUFFIXES = (".ckpt", ".safetensors")
# Writes the diffusers folder of the .safetensors weights, with diffusers' from_single_file options.
Converter = Callable[[Path, dict, Path, logging.Logger], None]


def convert_single_file(path: Path, sha256: str, cache_dir: Path,
                        choose: Callable[[Path, Path], Converter],
                        model_config: str | None = None, hf_token: str | None = None,
                        log: logging.Logger = logging.getLogger("dreambooth")) -> Path:
    """The diffusers folder for the checkpoint at `path`, converted once per file content;
    `choose(weights, path)` names the converter for the weights (a ModelError when no family takes them)."""
    path = Path(path)

    def build(folder: Path) -> None:
        log.info("Converting %s to diffusers form", path)
        with tempfile.TemporaryDirectory(prefix=".weights-", dir=folder.parent) as scratch:
            weights = _as_safetensors(path, Path(scratch))
            convert = choose(weights, path)
            local_config = model_config is not None and os.path.isdir(model_config)
            options = dict(config=model_config, local_files_only=local_config,
                           cache_dir=str(Path(cache_dir) / "hub"), token=hf_token)
            try:
                convert(weights, options, folder, log)
            except DreamBoothError:
                raise
            except Exception as exc:
                raise _conversion_error(exc, path, model_config) from exc

    folder, built = build_once(Path(cache_dir) / "converted" / converted_name(sha256, model_config),
                               build)
    if not built:
        log.info("Using %s, converted before from %s", folder, path)
    return folder


def converted_name(sha256: str, model_config: str | None) -> str:
    """The cache folder name: the file's content, plus the config, which can change the result."""
    if model_config is None:
        return sha256[:16]
    return f"{sha256[:16]}-{hashlib.sha256(model_config.encode()).hexdigest()[:8]}"


def _as_safetensors(path: Path, scratch: Path) -> Path:
    if path.suffix.lower() == ".safetensors":
        return path
    weights = scratch / "weights.safetensors"
    ckpt_to_safetensors(path, weights)
    return weights


def ckpt_to_safetensors(ckpt: Path, target: Path) -> None:
    """Copy the weights of a `.ckpt` into a `.safetensors` file, running no code from the pickle."""
    from safetensors.torch import save_file

    save_file(_without_shared_storage(read_ckpt_weights(ckpt)), str(target))


def read_ckpt_weights(ckpt: Path) -> dict:
    """The tensors of a `.ckpt`, from `{"state_dict": {...}}` or a bare dict of tensors."""
    import torch

    try:
        data = torch.load(ckpt, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(
            f"{ckpt} is not a plain weights file: {_refused_content(exc)}. Unpickling it could run code "
            "hidden in the file, so it was not loaded. Use a .safetensors version of the model, "
            "or convert this file with a tool you trust.") from exc
    except Exception as exc:
        raise ModelError(
            f"{ckpt} could not be read as a PyTorch checkpoint ({root_cause(exc)}). "
            "The file may be truncated or not a checkpoint; download it again.") from exc
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    weights = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)} if isinstance(data, dict) else {}
    if not weights:
        raise ModelError(
            f"{ckpt} holds no tensors (expected a dict of weights, or one under 'state_dict'). "
            "Check that it is a model checkpoint.")
    return weights


def _refused_content(exc: pickle.UnpicklingError) -> str:
    """What torch's weights-only loader refused, without its advice to load the file unsafely."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if found:
        return f"it asks for {found.group(1)}, which is not a tensor or plain container"
    return "it holds more than tensors and plain containers"


def _without_shared_storage(weights: dict) -> dict:
    """safetensors refuses tensors that share memory; give each its own contiguous copy where needed."""
    seen, result = set(), {}
    for name, tensor in weights.items():
        storage = tensor.untyped_storage().data_ptr()
        result[name] = tensor.clone() if storage in seen else tensor.contiguous()
        seen.add(storage)
    return result


def weight_names(weights: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as file:
        return set(file.keys())


def _conversion_error(exc: Exception, source: Path, model_config: str | None) -> Exception:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    config = f"--single-file-config {model_config!r}" if model_config else "no --single-file-config"
    unreachable = network_failure_in(exc)
    offline = caused_by(exc, OfflineModeIsEnabled) \
        or (isinstance(exc, LocalEntryNotFoundError) and not unreachable)
    if not (offline or unreachable):
        return ModelError(
            f"Cannot convert {source} to diffusers form with {config} ({root_cause(exc)}). "
            "Check that the file is a whole checkpoint of a supported model and that "
            "--single-file-config names a diffusers model of the same architecture.")
    why = (f"Cannot convert {source}: with {config}, diffusers fetches the architecture's config "
           f"files from the Hugging Face hub, which failed ({root_cause(exc)}).")
    fix = ("pass --single-file-config (single_file_config in a deployment) as a local diffusers "
           "folder of the same architecture, such as the diffusers/ folder of the session that "
           "wrote the file, to convert offline")
    if offline:
        return ModelError(f"{why} Either {fix}, or allow network access for one run.")
    return NetworkError(f"{why} Try again when the hub is reachable, or {fix}.")
