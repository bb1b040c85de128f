"""What each method exports, written into a local folder by the model's family.

Each writer returns the top-level names it created there (files and folders),
which the caller then places in the session atomically.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dreambooth_core.export.training_metadata import TrainingRecord, export_metadata, stamp_files
from dreambooth_core.families import ModelFamily, ModelParts
from dreambooth_core.training.methods import Trainables, adapted_encoders


def write_method(method: str, model_path: str, facts: ModelFamily, parts: ModelParts, trainables: Trainables,
                 name: str, step: int, dtype: torch.dtype, out: Path, record: TrainingRecord) -> list[str]:
    """The files `method` exports, from trained parts and their trainables, each .safetensors with
    the training metadata of `record`."""
    names = _write_files(method, model_path, facts, parts, trainables, name, step, dtype, out)
    stamp_files(out, names, export_metadata(record, facts, model_path, step))
    return names


def _write_files(method: str, model_path: str, facts: ModelFamily, parts: ModelParts, trainables: Trainables,
                 name: str, step: int, dtype: torch.dtype, out: Path) -> list[str]:
    family = parts.family
    if method == "lora":
        return family.write_lora(parts.denoiser, adapted_encoders(parts, trainables), name, dtype, out)
    if method == "textual-inversion":
        return family.write_embeddings(token_vectors(trainables, dtype), step, out)
    return family.write_full_model(facts, model_path, parts, name, step, dtype, out)


def token_vectors(trainables: Trainables, dtype: torch.dtype) -> list[dict[str, torch.Tensor]]:
    """Each text encoder's learned vectors by token."""
    second = trainables.token_vectors_2(dtype)
    return [trainables.token_vectors(dtype)] + ([second] if second is not None else [])
