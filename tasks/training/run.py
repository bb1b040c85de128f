"""Training one chunk: resume from the latest committed checkpoint, train, commit."""

from __future__ import annotations

import logging

import torch
from pydantic import BaseModel, ConfigDict

from tasks.config import Chunk
from tasks.dataset.prepare import MANIFEST
from tasks.errors import SessionError
from tasks.reports.monitor import TrainingMonitor  # [ui]
from tasks.session import Session
from tasks.training.checkpoint import Checkpoint, CheckpointStore
from tasks.training.model_parts import load_model_parts, resolve_device
from tasks.training.plan import TrainingPlan
from tasks.training.trainer import Example, Hyperparameters, UNetTrainer, pixels_from_png


class ChunkOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)
    end: int
    started_at: int
    trained_steps: int
    mean_loss: float | None


def load_examples(session: Session) -> list[Example]:
    items = session.read_json(MANIFEST)["items"]
    return [Example(pixels=pixels_from_png(session.read_bytes(i["file"])), caption=i["caption"],
                    subject=i.get("token", "")) for i in items]


def resume_point(store: CheckpointStore, plan: TrainingPlan, end: int) -> Checkpoint | None:
    checkpoint = store.load_latest(max_step=end)
    if checkpoint is not None and checkpoint.meta.get("fingerprint") != plan.fingerprint:
        raise SessionError(
            f"checkpoint at step {checkpoint.step} of session {plan.session.name!r} belongs to "
            "another training configuration. Start a new --session, or delete the session's "
            "checkpoints/ folder to train from the beginning.")
    return checkpoint


def train_chunk_steps(plan: TrainingPlan, chunk: Chunk, log: logging.Logger | None = None,
                      monitor: TrainingMonitor | None = None) -> ChunkOutcome:
    """Make sure a committed checkpoint at `chunk.end` (or later) exists."""
    log = log or logging.getLogger("dreambooth")
    session = plan.session.open()
    # [ui] loss log, progress and loss plot; the Prefect task passes one with UI callbacks
    monitor = monitor or TrainingMonitor(session, [c.end for c in plan.chunks], log)
    store = CheckpointStore(session, plan.keep_checkpoints, log)
    if store.latest_step() >= chunk.end:
        log.info("Steps %d-%d already committed; nothing to train", chunk.start, chunk.end)
        return ChunkOutcome(end=chunk.end, started_at=chunk.end, trained_steps=0, mean_loss=None)
    checkpoint = resume_point(store, plan, chunk.end)
    start = checkpoint.step if checkpoint else 0
    trainer = UNetTrainer(load_model_parts(plan.model_path, resolve_device(plan.device)),
                          load_examples(session),
                          Hyperparameters(plan.seed, plan.learning_rate, plan.max_grad_norm))
    if checkpoint:
        trainer.load_state(checkpoint)
        log.info("Resuming from committed checkpoint at step %d", start)
    log.info("Chunk %d/%d: training steps %d-%d of %d", chunk.index, chunk.count, start, chunk.end,
             plan.total_steps)
    monitor.chunk_started(start, chunk.end, plan.total_steps)  # [ui]
    mean_loss = _train(trainer, start, chunk.end, monitor)
    store.save(chunk.end, trainer.state_writers(), meta={"fingerprint": plan.fingerprint,
                                                        "samples_seen": chunk.end})
    monitor.chunk_finished()  # [ui] after the commit: timing, loss plot, UI callbacks
    return ChunkOutcome(end=chunk.end, started_at=start, trained_steps=chunk.end - start,
                        mean_loss=mean_loss)


def _train(trainer: UNetTrainer, start: int, end: int, monitor: TrainingMonitor) -> float:
    losses = []
    for step in range(start, end):
        losses.append(trainer.step(step))
        # [ui] buffers the loss tensor; reads (syncs) and logs every LOG_EVERY steps and at `end`,
        # writing reports/loss.csv before the checkpoint commit
        monitor.step(step, losses[-1], trainer.optimizer.param_groups[0]["lr"])
    return torch.stack(losses).mean().item()
