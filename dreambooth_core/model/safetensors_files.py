"""Writing tensors as a .safetensors file or a weights-only .ckpt, the same bytes for the same input.

Every file the tool exports goes through here: single-file models, LoRA files, embeddings.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from dreambooth_core.errors import ConfigError

if TYPE_CHECKING:
    import torch


def save_single_file(state: Mapping[str, torch.Tensor], path: Path,
                     fmt: Literal["safetensors", "ckpt"],
                     global_step: int | None = None,
                     metadata: Mapping[str, str] | None = None) -> None:
    """Write `state` to `path` as safetensors or as a weights-only-loadable .ckpt.

    `metadata` (text only; e.g. `model_spec.model_spec_metadata(...)`) goes into the .safetensors header.
    """
    import torch

    tensors = {key: tensor.to("cpu") for key, tensor in state.items()}
    if fmt == "safetensors":
        save_safetensors(tensors, path, metadata)
    elif fmt == "ckpt":
        checkpoint = {"state_dict": tensors}
        if global_step is not None:
            checkpoint["global_step"] = int(global_step)
        torch.save(checkpoint, path)
    else:
        raise ConfigError(f"Single-file format {fmt!r} is unknown: use 'safetensors' or 'ckpt'.")


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: Path,
                     metadata: Mapping[str, str] | None = None) -> None:
    """safetensors' save_file, with the metadata in sorted order so that equal inputs give equal files.

    safetensors writes metadata entries in a random order; the header is rewritten in place
    with the same entries sorted (the same bytes, reordered, so every offset stays valid).
    """
    from safetensors.torch import save_file

    save_file(dict(tensors), str(path), metadata={"format": "pt", **(metadata or {})})
    sort_metadata(path)


def sort_metadata(path: Path) -> None:
    """Rewrite a .safetensors header in place with its metadata entries sorted."""
    import json

    with open(path, "r+b") as file:
        size = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(size))
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        ordered = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        assert len(ordered) <= size, "a reordered header cannot grow"
        file.seek(8)
        file.write(ordered.ljust(size))


def add_metadata(path: Path, entries: Mapping[str, str]) -> None:
    """Add `entries` to a .safetensors header, keeping those the file already has (its writer
    knew them best), sorted; with kohya's `sshs_model_hash` and `sshs_legacy_hash` of the
    tensor data, which AUTOMATIC1111 shows as the network's hash instead of hashing the file.

    The tensor bytes are copied unchanged after the new header (their offsets count from
    the end of the header)."""
    import hashlib
    import json
    import os

    path = Path(path)
    with open(path, "rb") as file:
        size = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(size))
        data_start = 8 + size
        digest = hashlib.sha256()
        for block in iter(lambda: file.read(1 << 24), b""):
            digest.update(block)
        file.seek(data_start + 0x100000)
        legacy = hashlib.sha256(file.read(0x10000)).hexdigest()[:8]
        metadata = {**entries, "sshs_model_hash": digest.hexdigest(), "sshs_legacy_hash": legacy,
                    **header.get("__metadata__", {})}
        header["__metadata__"] = dict(sorted(metadata.items()))
        encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        encoded += b" " * (-len(encoded) % 8)  # safetensors aligns the data to 8 bytes
        partial = path.with_name(path.name + ".metadata")
        with open(partial, "wb") as out:
            out.write(len(encoded).to_bytes(8, "little") + encoded)
            file.seek(data_start)
            for block in iter(lambda: file.read(1 << 24), b""):
                out.write(block)
    os.replace(partial, path)
