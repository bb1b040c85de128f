"""Final outputs: the full model (`<session>.safetensors`, `.ckpt`, `diffusers/`), a LoRA or
an embedding, depending on the method.

Each is assembled locally, then placed in the session atomically, so a killed
export never leaves a partial file at a final name.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

from tasks.dataset.prepare import MANIFEST
from tasks.errors import SessionError
from tasks.export.method_files import DIFFUSERS, embedding_files, full_model_files, lora_files
from tasks.session import Session, temporary_name
from tasks.session_state import update_state
from tasks.training import live
from tasks.training.checkpoint import CheckpointStore
from tasks.training.plan import TrainingPlan, export_record
from tasks.training.methods import Trainables
from tasks.training.model_parts import ModelParts
from tasks.training.restore import restored_parts

DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


class ExportResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    step: int
    precision: str
    files: dict[str, int]  # session-relative path -> bytes


def final_parts(plan: TrainingPlan, session: Session) -> tuple[ModelParts, Trainables]:
    checkpoint = CheckpointStore(session, plan.keep_checkpoints).load_latest()
    if checkpoint is None or checkpoint.step != plan.total_steps:
        found = checkpoint.step if checkpoint else 0
        raise SessionError(f"session {session.name!r} has no usable checkpoint at step "
                           f"{plan.total_steps} (latest: {found}). Rerun the same command to "
                           "train the missing steps.")
    return restored_parts(plan.model_path, plan.options, subjects_of(session), checkpoint,
                          torch.device("cpu"))


def subjects_of(session: Session) -> list[str]:
    return sorted({item.get("token", "") for item in session.read_json(MANIFEST)["items"]})


def write_method_files(plan: TrainingPlan, session: Session, out: Path) -> list[str]:
    parts, trainables = final_parts(plan, session)
    dtype, name, method = DTYPES[plan.export_precision], session.name, plan.options.method
    if method == "lora":
        return lora_files(parts, trainables, name, dtype, out)
    if method == "textual-inversion":
        return embedding_files(trainables, plan.total_steps, dtype, out)
    return full_model_files(plan.model_path, parts, name, plan.total_steps, dtype, out)


def export_outputs(plan: TrainingPlan, log: logging.Logger | None = None) -> ExportResult:
    log = log or logging.getLogger("dreambooth")
    live.release()
    live.wait_for_commits()
    session = plan.session.open()
    session.remove_temporary()
    with tempfile.TemporaryDirectory(prefix="dreambooth-export-") as tmp:
        local = Path(tmp)
        written = write_method_files(plan, session, local)
        for name in written:
            if (local / name).is_dir():
                replace_folder(session, local / name, name)
        for name in written:
            if (local / name).is_file():
                session.put_file(local / name, name)
        files = {f.relative_to(local).as_posix(): f.stat().st_size
                 for f in sorted(local.rglob("*")) if f.is_file() and not is_diffusers_part(f, local)}
    precision = plan.export_precision
    update_state(session, status="complete", outputs=files,
                 export=export_record(plan.fingerprint, plan.total_steps, precision))
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
