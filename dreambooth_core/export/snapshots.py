"""Model snapshots every N steps: small fp16 files to compare and pick from, kept K at a time.

They are separate from the training state (checkpoints/) and never needed for resume:
a snapshot rewritten after a resume has the same content."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dreambooth_core.export.method_files import token_vectors
from dreambooth_core.export.training_metadata import export_metadata, stamp_files, training_record
from dreambooth_core.families import ModelFamily, ModelParts
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import SNAPSHOTS, snapshot_folder, steps_named
from dreambooth_core.session.scratch import scratch_folder
from dreambooth_core.session.storage import SessionRef
from dreambooth_core.training.methods import Trainables, adapted_encoders
from dreambooth_core.training.trainer import Trainer


@dataclass(frozen=True)
class SnapshotHook:
    """Writes a snapshot every `every` steps from the trainer's own modules (rank 0)."""

    session: SessionRef
    model_path: str
    family: ModelFamily
    every: int
    keep: int

    def __call__(self, trainer: Trainer, step: int) -> None:
        if self.every and step % self.every == 0:
            write_snapshot(self.session.open(), self.model_path, self.family, trainer.settings.method,
                           trainer.parts, trainer.trainables, step, self.keep)


def write_snapshot(session: Session, model_path: str, family: ModelFamily, method: str, parts: ModelParts,
                   trainables: Trainables, step: int, keep: int) -> list[str]:
    """Write the snapshot at `step`, then delete all but the newest `keep` steps' files."""
    name = f"{session.name}-step-{step:06d}"
    folder = snapshot_folder(step)
    with scratch_folder(session, "snapshot") as local:
        _write_local(local, model_path, family, method, parts, trainables, name, step)
        stamp_files(local, sorted(p.name for p in local.iterdir()),
                    export_metadata(training_record(session), family, model_path, step))
        files = sorted(p for p in local.rglob("*") if p.is_file())
        for file in files:
            session.put_file(file, f"{folder}/{file.relative_to(local).as_posix()}")
    _apply_retention(session, keep)
    return [f"{folder}/{f.relative_to(local).as_posix()}" for f in files]


@torch.no_grad()
def _write_local(out: Path, model_path: str, family: ModelFamily, method: str, parts: ModelParts,
                 trainables: Trainables, name: str, step: int) -> None:
    if method == "lora":
        parts.family.write_lora_file(parts.denoiser, adapted_encoders(parts, trainables),
                                     out / f"{name}.safetensors", torch.float16)
    elif method == "textual-inversion":
        parts.family.write_embeddings(token_vectors(trainables, torch.float16), step, out, full=False)
    else:  # the training modules stay fp32: the snapshot converts a copy of each tensor
        parts.family.write_full_snapshot(family, model_path, parts, name, step, out / f"{name}.safetensors")


def snapshot_steps(session: Session) -> list[int]:
    return steps_named(session.list(SNAPSHOTS))


def _apply_retention(session: Session, keep: int) -> None:
    for step in snapshot_steps(session)[:-keep]:
        session.remove(snapshot_folder(step))
