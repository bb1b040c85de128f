"""Final outputs: the full model (`<session>.safetensors`, `.ckpt`, `diffusers/`), a LoRA or
an embedding, depending on the method.

Each is assembled locally, then placed in the session atomically, so a killed
export never leaves a partial file at a final name.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

from dreambooth_core.config import ExportSettings
from dreambooth_core.errors import SessionError, TrainingError
from dreambooth_core.export.method_files import write_method
from dreambooth_core.export.training_metadata import training_record
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.folder import Session, temporary_name
from dreambooth_core.session.paths import DIFFUSERS
from dreambooth_core.session.scratch import scratch_folder
from dreambooth_core.session.state import ExportRecord, load_state, outputs_current, update_state
from dreambooth_core.training.chunk import weights_finite
from dreambooth_core.training.live import LiveTraining
from dreambooth_core.training.methods import Trainables
from dreambooth_core.families.family import ModelParts
from dreambooth_core.training.plan import TrainingPlan
from dreambooth_core.training.trainer import restored_parts

DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


class ExportResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    step: int
    precision: str
    files: dict[str, int]  # session-relative path -> bytes


def export_record(plan: TrainingPlan, settings: ExportSettings) -> ExportRecord:
    return ExportRecord(fingerprint=plan.fingerprint, step=plan.total_steps, precision=settings.export_precision)


def final_parts(plan: TrainingPlan, session: Session) -> tuple[ModelParts, Trainables]:
    checkpoint = CheckpointStore(session, plan.runtime.keep_checkpoints).load_latest()
    if checkpoint is None or checkpoint.step != plan.total_steps:
        found = checkpoint.step if checkpoint else 0
        raise SessionError(f"session {session.name!r} has no usable checkpoint at step "
                           f"{plan.total_steps} (latest: {found}). Rerun the same command to "
                           "train the missing steps.")
    return restored_parts(plan.model_path, plan.training, plan.subjects, checkpoint, torch.device("cpu"))


def write_method_files(plan: TrainingPlan, session: Session, dtype: torch.dtype, out: Path) -> list[str]:
    parts, trainables = final_parts(plan, session)
    refuse_non_finite(trainables, dtype, plan.total_steps)
    return write_method(plan.training.method, plan.model_path, plan.family, parts, trainables, session.name,
                        plan.total_steps, dtype, out, training_record(session))


def refuse_non_finite(trainables: Trainables, dtype: torch.dtype, step: int) -> None:
    """Never write a model of NaNs (a checkpoint from before training checked, or weights
    beyond what the export precision holds)."""
    if not weights_finite(list(trainables.named().values()), dtype):
        raise TrainingError(
            f"the trained weights at step {step} are NaN or infinite in {dtype}, so no model is "
            "exported. Train a new --session with a lower --learning-rate, or export this one "
            "with --export-precision fp32 if it is finite in fp32.")


def export_outputs(plan: TrainingPlan, settings: ExportSettings, live: LiveTraining | None = None,
                   log: logging.Logger | None = None) -> ExportResult:
    """Write the method's outputs into the session; nothing when they are already there."""
    log = log or logging.getLogger("dreambooth")
    if live is not None:
        live.release()  # the trainer's memory, before the model is loaded again
        live.wait()
    session = plan.session.open()
    precision = settings.export_precision
    if outputs_current(session, export_record(plan, settings)):
        log.info("The outputs of step %d (%s) are already in %s", plan.total_steps, precision, session.url)
        return ExportResult(step=plan.total_steps, precision=precision, files=load_state(session).outputs)
    session.remove_temporary()
    with scratch_folder(session, "export") as local:  # on the session's disk when it is local
        written = write_method_files(plan, session, DTYPES[precision], local)
        for name in written:
            if (local / name).is_dir():
                replace_folder(session, local / name, name)
        for name in written:
            if (local / name).is_file():
                session.put_file(local / name, name)
        files = {f.relative_to(local).as_posix(): f.stat().st_size
                 for f in sorted(local.rglob("*")) if f.is_file() and not is_diffusers_part(f, local)}
    update_state(session, status="complete", outputs=files, export=export_record(plan, settings))
    for path, size in files.items():
        log.info("Wrote %s/%s (%s, %s)", session.url, path, human_size(size), precision)
    if DIFFUSERS in written:
        log.info("Wrote %s/%s/ (diffusers folder)", session.url, DIFFUSERS)
    return ExportResult(step=plan.total_steps, precision=precision, files=files)


def is_diffusers_part(file: Path, root: Path) -> bool:
    """Files of the full diffusers folder are not listed one by one."""
    return file.relative_to(root).parts[0] == DIFFUSERS


def human_size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} KB"


def replace_folder(session: Session, local: Path, relative: str) -> None:
    """Upload under a temporary name, then swap it in place of the old folder."""
    staging = temporary_name(relative)
    session.put_folder(local, staging)
    if session.exists(relative):
        retired = temporary_name(relative)
        session.rename(relative, retired)
        session.rename(staging, relative)
        session.remove(retired)
    else:
        session.rename(staging, relative)
