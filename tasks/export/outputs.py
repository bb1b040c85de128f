"""Final outputs: `<session>.safetensors`, `<session>.ckpt` and `diffusers/`.

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
from tasks.model.family import detect_family
from tasks.model.openclip_layout import load_extras
from tasks.model.model_spec import model_spec_metadata
from tasks.model.single_file import save_single_file, to_single_file_state
from tasks.session import Session, temporary_name
from tasks.session_state import update_state
from tasks.training.checkpoint import CheckpointStore
from tasks.training.plan import TrainingPlan, export_record
from tasks.training.model_parts import ModelParts
from tasks.training.restore import restored_parts

DIFFUSERS = "diffusers"
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


class ExportResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    step: int
    precision: str
    files: dict[str, int]  # session-relative path -> bytes


def final_parts(plan: TrainingPlan, session: Session) -> ModelParts:
    checkpoint = CheckpointStore(session, plan.keep_checkpoints).load_latest()
    if checkpoint is None or checkpoint.step != plan.total_steps:
        found = checkpoint.step if checkpoint else 0
        raise SessionError(f"session {session.name!r} has no usable checkpoint at step "
                           f"{plan.total_steps} (latest: {found}). Rerun the same command to "
                           "train the missing steps.")
    parts, _ = restored_parts(plan.model_path, plan.options, subjects_of(session), checkpoint,
                              torch.device("cpu"))
    return parts


def subjects_of(session: Session) -> list[str]:
    return sorted({item.get("token", "") for item in session.read_json(MANIFEST)["items"]})


def final_pipeline(plan: TrainingPlan, session: Session, dtype: torch.dtype):
    from diffusers import StableDiffusionPipeline

    parts = final_parts(plan, session)
    pipeline = StableDiffusionPipeline.from_pretrained(
        plan.model_path, unet=parts.unet, text_encoder=parts.text_encoder,
        safety_checker=None, requires_safety_checker=False)
    return pipeline.to(dtype=dtype)


def export_outputs(plan: TrainingPlan, log: logging.Logger | None = None) -> ExportResult:
    log = log or logging.getLogger("dreambooth")
    precision = plan.export_precision
    session = plan.session.open()
    session.remove_temporary()
    pipeline = final_pipeline(plan, session, DTYPES[precision])
    name = session.name
    with tempfile.TemporaryDirectory(prefix="dreambooth-export-") as tmp:
        local = Path(tmp)
        pipeline.save_pretrained(local / DIFFUSERS, safe_serialization=True)
        # SD 2.x: the base single file's final text-encoder layer etc. when it was one (else neutral).
        state = to_single_file_state(pipeline.unet, pipeline.vae, pipeline.text_encoder, load_extras(plan.model_path))
        metadata = model_spec_metadata(detect_family(plan.model_path), name)
        for fmt in ("safetensors", "ckpt"):
            save_single_file(state, local / f"{name}.{fmt}", fmt, plan.total_steps, metadata)
        replace_folder(session, local / DIFFUSERS, DIFFUSERS)
        for fmt in ("safetensors", "ckpt"):
            session.put_file(local / f"{name}.{fmt}", f"{name}.{fmt}")
    files = {f"{name}.{fmt}": session.size(f"{name}.{fmt}") for fmt in ("safetensors", "ckpt")}
    update_state(session, status="complete", export=export_record(plan.fingerprint, plan.total_steps, precision), outputs=files)
    for path, size in files.items():
        log.info("Wrote %s/%s (%.1f MB, %s)", session.url, path, size / 1e6, precision)
    log.info("Wrote %s/%s/ (diffusers folder)", session.url, DIFFUSERS)
    return ExportResult(step=plan.total_steps, precision=precision, files=files)


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
