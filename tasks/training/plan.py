"""The training plan: fingerprint, total steps, chunks, and where to resume."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from tasks.config import Chunk, DreamBoothConfig, differing_fields, digest, plan_chunks, total_steps
from tasks.errors import ConfigError
from tasks.session import Session
from tasks.session_state import SessionRef, read_state, update_state
from tasks.training.checkpoint import CheckpointStore


class TrainingPlan(BaseModel):
    """Everything a chunk needs, small enough to be a task parameter."""

    model_config = ConfigDict(frozen=True)
    session: SessionRef
    model_path: str
    fingerprint: str
    total_steps: int
    chunks: list[Chunk]
    resume_step: int
    seed: int
    learning_rate: float
    max_grad_norm: float
    keep_checkpoints: int
    device: str
    export_precision: str
    exported: bool  # outputs for exactly this plan are already in the session
    preemption_grace: float = 25.0  # [cloud] seconds from SIGTERM to the machine's end


def export_record(fingerprint: str, steps: int, precision: str) -> dict:
    return {"fingerprint": fingerprint, "step": steps, "precision": precision}


def fingerprint_values(config: DreamBoothConfig, model_digest: str, dataset_digest: str) -> dict:
    return {**config.training_values(), "model content": model_digest, "dataset": dataset_digest}


def make_plan(session: Session, ref: SessionRef, config: DreamBoothConfig, model_path: str,
              model_digest: str, dataset_digest: str, photo_count: int) -> TrainingPlan:
    """Record the fingerprint on first use; refuse a session trained with another."""
    values = fingerprint_values(config, model_digest, dataset_digest)
    recorded = (read_state(session) or {}).get("fingerprint")
    if recorded is not None and recorded != values:
        raise ConfigError(
            f"session {session.name!r} was trained on different inputs: "
            f"{', '.join(differing_fields(recorded, values))} changed. Restore them (for a hub "
            "model, pin --revision) or start a new --session.")
    total = total_steps(config, photo_count)
    resume = CheckpointStore(session, config.keep_checkpoints).latest_step()
    if resume > total:
        raise ConfigError(f"--steps {total} is below the {resume} steps session {session.name!r} "
                          f"has already trained. Pass --steps {resume} or more.")
    state = update_state(session, fingerprint=values, total_steps=total)
    record = export_record(digest(values), total, config.export_precision)
    exported = state.get("export") == record and all(map(session.exists, state.get("outputs", {})))
    return TrainingPlan(
        session=ref, model_path=model_path, fingerprint=digest(values), total_steps=total,
        chunks=plan_chunks(total, config.chunk_steps), resume_step=resume, seed=config.seed,
        learning_rate=config.learning_rate, max_grad_norm=config.max_grad_norm,
        keep_checkpoints=config.keep_checkpoints, device=config.device,
        export_precision=config.export_precision, exported=exported,
        preemption_grace=config.preemption_grace)
