"""Frozen text conditioning kept in the session: each caption encoded once, read back on resume.

While no text encoder trains, what the encoders give a caption never changes. The trainer encodes
every caption and class prompt once, alone (so the value equals what encoding it inside a batch
step gives), keeps the results on the device for the steps and frees the encoders from it. Each
result is also written to the session's text_embeddings/ folder, so a resumed run reads them
instead of moving the encoders to the GPU again; a missing or unreadable file is encoded again,
giving the same bits (the same encoders, precision and device compute it).

A file's name is the digest of everything its value depends on: the training fingerprint (the
model's content, the precision and base precision, every training setting), the trained text-side
weights when a text-encoder phase changed them, the caption, and the kind of device that encoded
it. A changed model, caption or encoder therefore looks for another file, never a stale one.
"""

from __future__ import annotations

import hashlib

import safetensors.torch
import torch

from dreambooth_core.families.family import Condition
from dreambooth_core.hashing import digest
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import text_embedding_file
from dreambooth_core.session.tensor_files import write_safetensors

FORMAT = 1  # bump when what a file holds, or how a family encodes a caption, changes


class EmbeddingStore:
    """The session's text embeddings for one training configuration (`identity`: its fingerprint).
    `writes`: whether this process writes what it encodes (one rank of several does)."""

    def __init__(self, session: Session, identity: str, writes: bool = True):
        self.session, self.identity, self.writes = session, identity, writes

    def file(self, caption: str, encoders: str, device: torch.device) -> str:
        """`encoders`: the digest of the trained text-side weights ("" when they are the model's)."""
        return text_embedding_file(digest([FORMAT, self.identity, encoders, caption, device.type]))

    def load(self, relative: str, device: torch.device) -> Condition | None:
        """The stored condition on `device`; None when there is none or it cannot be read."""
        try:
            tensors = safetensors.torch.load(self.session.read_bytes(relative))
        except Exception:  # noqa: BLE001 - none yet, or damaged: encoded again, to the same bits
            return None
        if "hidden" not in tensors:
            return None
        pooled = tensors.get("pooled")
        return Condition(tensors["hidden"].to(device), None if pooled is None else pooled.to(device))

    def save(self, relative: str, condition: Condition) -> None:
        if not self.writes:
            return
        tensors = {"hidden": condition.hidden}
        if condition.pooled is not None:
            tensors["pooled"] = condition.pooled
        self.session.write_with(relative, lambda f: write_safetensors(f, tensors))


def weights_digest(weights: dict[str, torch.Tensor]) -> str:
    """A digest of tensors' names, dtypes, shapes and bytes ("" for none). Reads every value back
    to the host: once per run, when a text-encoder phase ends (SDXL's two encoders: ~3 GB)."""
    if not weights:
        return ""
    sha = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name].detach().to("cpu").contiguous()
        sha.update(f"{name}:{tensor.dtype}:{list(tensor.shape)}\0".encode())
        sha.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()[:16]
