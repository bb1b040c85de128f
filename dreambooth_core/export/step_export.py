"""Exporting a step of a session: the one writer of exported files (`write_step`), from a committed
checkpoint (exact, EMA applied), from the trainer's weights in memory at that checkpoint's step (the
same values), or else from a snapshot (its fp16 values).

`dreambooth export --step N` (and evaluation, generation) places them in

    exports/step-NNNNNN/   <session>-step-NNNNNN.safetensors ... as the method exports them

assembled locally and placed in the session at once, replacing an earlier export of the same step;
the final outputs and session.json are left as they are. The final export (outputs.py) is the
export of the last step, at the session's top level under the session's name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import safetensors.torch
import torch
from pydantic import BaseModel, ConfigDict

from dreambooth_core.config import TrainingSettings
from dreambooth_core.errors import SessionError, TrainingError
from dreambooth_core.export.method_files import write_method
from dreambooth_core.export.snapshots import snapshot_steps
from dreambooth_core.export.training_metadata import training_record
from dreambooth_core.families import ModelFamily, ModelParts, load_model_parts
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.dataset_manifest import require_dataset_manifest
from dreambooth_core.session.folder import Session, temporary_name
from dreambooth_core.session.paths import export_folder, snapshot_folder, step_name
from dreambooth_core.session.scratch import scratch_folder
from dreambooth_core.session.state import existing_state, load_state
from dreambooth_core.training.chunk import weights_finite
from dreambooth_core.training.distributed import sharded_checkpoint
from dreambooth_core.training.methods import Trainables, adapted_encoders, set_up_method
from dreambooth_core.training.plan import TrainingPlan
from dreambooth_core.training.trainer import (
    EMA_FILE,
    WEIGHTS_FILE,
    Weights,
    checkpoint_weights,
    parts_with,
)

Source = Literal["checkpoint", "snapshot"]
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


class TrainedSession(BaseModel):
    """What an export needs to know of how a session was trained."""

    model_config = ConfigDict(frozen=True)
    name: str
    model_path: str
    family: ModelFamily
    training: TrainingSettings  # with the memory plan applied, as the chunks trained
    subjects: list[str]

    @classmethod
    def of(cls, plan: TrainingPlan) -> TrainedSession:
        return cls(name=plan.session.name, model_path=plan.model_path, family=plan.family,
                   training=plan.training, subjects=plan.subjects)


class StepExport(BaseModel):
    model_config = ConfigDict(frozen=True)
    step: int
    source: Source
    precision: str
    folder: str  # session-relative
    files: dict[str, int]  # session-relative path -> bytes


def trained_session(session: Session, model_path: str, family: ModelFamily) -> TrainedSession:
    """The session's training settings and subjects, from session.json and the dataset manifest."""
    state = existing_state(session)
    training, runtime = state.config.training, state.config.runtime
    if state.memory_plan:
        training, _ = state.memory_plan.apply(training, runtime)
    return TrainedSession(name=session.name, model_path=model_path, family=family, training=training,
                          subjects=require_dataset_manifest(session).tokens)


def require_trained_model(session: Session, model_digest: str, model: str) -> None:
    """LoRA and embeddings apply to the model they were trained on: a hub repo updated since
    (no --revision pinned) would give another model."""
    recorded = (load_state(session).fingerprint or {}).get("model content")
    if recorded is not None and recorded != model_digest:
        raise SessionError(f"the base model {model!r} is not the one session {session.name!r} was "
                           "trained on: its content changed since (a new hub revision, when no "
                           "--revision was pinned), and the trained weights belong with the old one. "
                           "Use a machine whose model cache holds the model trained on.")


def exportable_steps(session: Session) -> dict[int, Source]:
    """Every step with weights to export: committed checkpoints first, then snapshots."""
    snapshots: dict[int, Source] = {step: "snapshot" for step in snapshot_steps(session)}
    return snapshots | {step: "checkpoint" for step in CheckpointStore(session).committed_steps()}


def require_step(session: Session, step: int, flag: str = "--step") -> Source:
    """Where step `step`'s weights are, or an error listing the steps there are (to pass as `flag`)."""
    steps = exportable_steps(session)
    if step in steps:
        return steps[step]
    if not steps:
        raise SessionError(f"session {session.name!r} has no committed checkpoint or snapshot yet: "
                           "train it until its first chunk ends (dreambooth train), then export.")
    listed = ", ".join(f"{s} ({steps[s]})" for s in sorted(steps))
    raise SessionError(f"session {session.name!r} has no checkpoint or snapshot at step {step}. "
                       f"Steps there are: {listed}. Pass one of them as {flag}.")


def export_step(session: Session, trained: TrainedSession, step: int, precision: str,
                log: logging.Logger | None = None) -> StepExport:
    """Write the method's files for `step` into exports/step-NNNNNN/."""
    log = log or logging.getLogger("dreambooth")
    source = require_step(session, step)
    folder = export_folder(step)
    if source == "snapshot":
        log.info("Step %d has no committed checkpoint (only the last few are kept); exporting its "
                 "snapshot, whose weights are fp16", step)
    with scratch_folder(session, "export") as local:
        out = local / step_name(step)
        out.mkdir()
        write_step(session, trained, step, precision, f"{session.name}-{step_name(step)}", out, source, local)
        files = {f"{folder}/{f.relative_to(out).as_posix()}": f.stat().st_size
                 for f in sorted(out.rglob("*")) if f.is_file()}
        replace_folder(session, out, folder)
    log.info("Wrote %s/%s/ (step %d from its %s, %s)", session.url, folder, step, source, precision)
    return StepExport(step=step, source=source, precision=precision, folder=folder, files=files)


def write_step(session: Session, trained: TrainedSession, step: int, precision: str, name: str, out: Path,
               source: Source = "checkpoint", scratch: Path | None = None,
               weights: Weights | None = None) -> list[str]:
    """Write the method's files of step `step` into the local folder `out` under `name`; returns the
    top-level names written. From `weights` when given (the trainer's at `step`), else from `source`
    (a snapshot is fetched into the local folder `scratch`)."""
    dtype = DTYPES[precision]
    if weights is not None:
        parts, trainables = parts_with(trained.model_path, trained.training, trained.subjects, weights,
                                       torch.device("cpu"))
    else:
        parts, trainables = step_parts(session, trained, step, source, scratch)
    if source == "checkpoint":  # a snapshot's fp16 values are finite: it was written from checked weights
        refuse_non_finite(trainables, dtype, step)
    return write_method(trained.training.method, trained.model_path, trained.family, parts, trainables, name,
                        step, dtype, out, training_record(session))


def refuse_non_finite(trainables: Trainables, dtype: torch.dtype, step: int) -> None:
    """Never write a model of NaNs (a checkpoint from before training checked, or weights
    beyond what the export precision holds)."""
    if not weights_finite(list(trainables.named().values()), dtype):
        raise TrainingError(
            f"the trained weights at step {step} are NaN or infinite in {dtype}, so no model is "
            "exported. Train a new --session with a lower --learning-rate, or export this one "
            "with --export-precision fp32 if it is finite in fp32.")


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


def step_parts(session: Session, trained: TrainedSession, step: int, source: Source,
               scratch: Path, use_ema: bool = True) -> tuple[ModelParts, Trainables]:
    """The base model on the CPU with step `step`'s trained weights in place (`scratch`: a
    local folder for a snapshot's files). `use_ema=False`: a checkpoint's UNet as trained, not
    averaged (what the samples during training show)."""
    if source == "checkpoint":
        return _checkpoint_parts(session, trained, step, use_ema)
    return _snapshot_parts(session, trained, step, scratch)


def _checkpoint_parts(session: Session, trained: TrainedSession, step: int,
                      use_ema: bool = True) -> tuple[ModelParts, Trainables]:
    weights = committed_weights(session, step, use_ema)
    if weights is None:
        raise SessionError(f"the checkpoint at step {step} of session {session.name!r} is gone or does "
                           "not verify (a training run may have replaced it). Run `dreambooth status "
                           f"{session.name}` to see the steps there are, and use one of them.")
    return parts_with(trained.model_path, trained.training, trained.subjects, weights, torch.device("cpu"))


def committed_weights(session: Session, step: int, use_ema: bool = True) -> Weights | None:
    """The trained weights of the committed checkpoint at `step` (not its optimizer), or None when
    it is gone or does not verify."""
    store = CheckpointStore(session)
    manifest = store.manifest(step)
    if manifest is not None and sharded_checkpoint.is_sharded_checkpoint(manifest.files):
        if not store.verify(step, manifest.files):  # a --shard run's: read whole in this process
            return None
        averaged = sharded_checkpoint.read_whole(session, step, "ema") if use_ema else {}
        return sharded_checkpoint.read_whole(session, step, "weights"), averaged or None
    checkpoint = store.load(step, only=(WEIGHTS_FILE, EMA_FILE))
    return checkpoint_weights(checkpoint, use_ema) if checkpoint is not None else None


@torch.no_grad()
def _snapshot_parts(session: Session, trained: TrainedSession, step: int,
                    scratch: Path) -> tuple[ModelParts, Trainables]:
    snapshot = scratch / "snapshot"
    session.get_folder(snapshot_folder(step), snapshot)
    parts = load_model_parts(trained.model_path, torch.device("cpu"))
    trainables = set_up_method(parts, trained.training, trained.subjects)
    weights = snapshot / f"{session.name}-{step_name(step)}.safetensors"
    method, family = trained.training.method, parts.family
    if method == "textual-inversion":
        keys = family.embedding_keys(len(trainables.new_vectors))
        for row, token in enumerate(trainables.new_tokens):
            stored = safetensors.torch.load_file(snapshot / f"{token}.safetensors")
            for vectors, key in zip(trainables.new_vectors, keys):
                vectors[row].copy_(stored[key].reshape(-1))
    elif method == "lora":
        family.read_lora_file(parts.denoiser, adapted_encoders(parts, trainables),
                              safetensors.torch.load_file(weights))
    else:
        family.read_full_snapshot(parts, weights, trained.model_path)  # replaces the modules trainables hold
    parts.denoiser.requires_grad_(False).eval()
    for encoder in parts.text_encoders:
        encoder.requires_grad_(False).eval()
    return parts, trainables

