"""Final outputs: the export of the last step (step_export.py), placed at the session's top level
under the session's name: the full model (`<session>.safetensors`, `.ckpt`, `diffusers/`), a LoRA
or an embedding, depending on the method.

Each is assembled locally, then placed in the session atomically, so a killed
export never leaves a partial file at a final name.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from dreambooth_core.config import ExportSettings
from dreambooth_core.errors import SessionError
from dreambooth_core.export.step_export import TrainedSession, committed_weights, replace_folder, write_step
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import DIFFUSERS
from dreambooth_core.session.scratch import scratch_folder
from dreambooth_core.session.state import ExportRecord, load_state, update_state
from dreambooth_core.training.chunk import trainer_key
from dreambooth_core.training.live import LiveTraining
from dreambooth_core.training.plan import TrainingPlan
from dreambooth_core.training.trainer import Weights, trainer_weights


class ExportResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    step: int
    precision: str
    files: dict[str, int]  # session-relative path -> bytes


def export_outputs(plan: TrainingPlan, settings: ExportSettings, live: LiveTraining | None = None,
                   log: logging.Logger | None = None) -> ExportResult:
    """Write the method's outputs of the last step into the session; nothing when they are already there."""
    log = log or logging.getLogger("dreambooth")
    step, precision = plan.total_steps, settings.export_precision
    done = plan.done.export_done_by(step, precision) is not None
    held = live_weights(plan, live, wanted=not done)  # the trainer's, when it stands at the last step
    session = plan.session.open()
    if done:
        log.info("The outputs of step %d (%s) are already in %s", step, precision, session.url)
        return ExportResult(step=step, precision=precision, files=load_state(session).outputs)
    log.info("Exporting step %d from %s", step, "the trainer's weights in memory" if held is not None
             else "its committed checkpoint")
    session.remove_temporary()
    with scratch_folder(session, "export") as local:  # on the session's disk when it is local
        written = write_step(session, TrainedSession.of(plan), step, precision, session.name, local,
                             weights=held if held is not None else last_checkpoint_weights(session, step))
        for name in written:
            if (local / name).is_dir():
                replace_folder(session, local / name, name)
        for name in written:
            if (local / name).is_file():
                session.put_file(local / name, name)
        files = {f.relative_to(local).as_posix(): f.stat().st_size
                 for f in sorted(local.rglob("*")) if f.is_file() and not is_diffusers_part(f, local)}
    record = ExportRecord(fingerprint=plan.fingerprint, step=step, precision=precision, run=plan.done.run)
    update_state(session, status="complete", outputs=files, export=record)
    for path, size in files.items():
        log.info("Wrote %s/%s (%s, %s)", session.url, path, human_size(size), precision)
    if DIFFUSERS in written:
        log.info("Wrote %s/%s/ (diffusers folder)", session.url, DIFFUSERS)
    return ExportResult(step=step, precision=precision, files=files)


def live_weights(plan: TrainingPlan, live: LiveTraining | None, wanted: bool = True) -> Weights | None:
    """The weights of the run's trainer when it stands at the last step (the values its checkpoint
    holds, not read back), on the CPU; then its memory is released and its commits waited for."""
    if live is None:
        return None
    trainer = live.take(trainer_key(plan), plan.total_steps)
    weights = trainer_weights(trainer) if trainer is not None and wanted else None
    del trainer
    live.release()  # the trainer's memory, before the model is loaded again
    live.wait()  # the last checkpoint is committed before its export is recorded
    return weights


def last_checkpoint_weights(session: Session, step: int) -> Weights:
    weights = committed_weights(session, step)
    if weights is None:
        raise SessionError(f"session {session.name!r} has no usable checkpoint at step {step} (latest: "
                           f"{CheckpointStore(session).latest_step()}). Rerun the same command to train "
                           "the missing steps.")
    return weights


def is_diffusers_part(file: Path, root: Path) -> bool:
    """Files of the full diffusers folder are not listed one by one."""
    return file.relative_to(root).parts[0] == DIFFUSERS


def human_size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} KB"
