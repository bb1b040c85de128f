"""Training one chunk: resume from the latest committed checkpoint, train, commit."""

from __future__ import annotations

import logging
import time

import torch
from pydantic import BaseModel, ConfigDict

from tasks.config import Chunk
from tasks.dataset.prepare import MANIFEST
from tasks.errors import SessionError
from tasks.session import Session
from tasks.training.checkpoint import Checkpoint, CheckpointStore
from tasks.training.model_parts import load_model_parts, resolve_device
from tasks.training.plan import TrainingPlan
from tasks.training.preemption import (StopRequest, TrainingStopped, save_on_stop,
                                        stop_requests, timed_save)
from tasks.training.trainer import Example, Hyperparameters, UNetTrainer, pixels_from_png

LOG_EVERY = 50


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


def train_chunk_steps(plan: TrainingPlan, chunk: Chunk, log: logging.Logger | None = None) -> ChunkOutcome:
    """Make sure a committed checkpoint at `chunk.end` (or later) exists."""
    log = log or logging.getLogger("dreambooth")
    session = plan.session.open()
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
    # [cloud] preemption: SIGTERM stops training after the current step (tasks/training/preemption.py).
    with stop_requests(plan.preemption_grace) as stop:
        mean_loss, reached = _train(trainer, start, chunk.end, log, stop)
        if stop.requested:
            save_on_stop(store, trainer, reached, plan.fingerprint, stop, log)
        else:
            timed_save(store, chunk.end, trainer.state_writers(),
                       meta={"fingerprint": plan.fingerprint, "samples_seen": chunk.end})
    if stop.requested:  # reached only when the previous SIGTERM handler ignores the signal
        raise TrainingStopped(f"training stopped at step {reached} on SIGTERM")
    return ChunkOutcome(end=chunk.end, started_at=start, trained_steps=chunk.end - start,
                        mean_loss=mean_loss)


def _train(trainer: UNetTrainer, start: int, end: int, log: logging.Logger,
           stop: StopRequest) -> tuple[float, int]:
    """Train steps [start, end); stop early on a SIGTERM. Returns (mean loss, step reached)."""
    losses, began = [], time.perf_counter()
    for step in range(start, end):
        losses.append(trainer.step(step))
        done = step + 1 - start
        if done % LOG_EVERY == 0 or step + 1 == end or stop.requested:
            # .item() waits for the device: only at log intervals.
            recent = torch.stack(losses[-LOG_EVERY:]).mean().item()
            rate = done / (time.perf_counter() - began)
            log.info("step %d/%d  loss %.4f  %.2f it/s", step + 1, end, recent, rate)
        if stop.requested:
            return torch.stack(losses).mean().item(), step + 1
    return torch.stack(losses).mean().item(), end
