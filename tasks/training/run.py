"""Training one chunk: resume from the latest committed checkpoint, train, commit."""

from __future__ import annotations

import logging
from typing import Callable

import torch
from pydantic import BaseModel, ConfigDict

from tasks.config import Chunk
from tasks.dataset.prepare import MANIFEST
from tasks.errors import SessionError
from tasks.reports.monitor import TrainingMonitor
from tasks.session import Session
from tasks.training import live
from tasks.training.checkpoint import Checkpoint, CheckpointStore
from tasks.training.distributed import train_chunk_on_processes
from tasks.training.model_parts import load_model_parts, resolve_device
from tasks.export.snapshots import write_snapshot
from tasks.generation.class_images import ClassImages, read_class_images
from tasks.generation.samples import Samples, render_samples
from tasks.training.plan import TrainingPlan
from tasks.training.preemption import StopRequest, TrainingStopped, save_on_stop, stop_requests
from tasks.training.trainer import Example, Trainer, pixels_from_png

AfterStep = Callable[[Trainer, int], None]


class ChunkOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)
    end: int
    started_at: int
    trained_steps: int
    mean_loss: float | None
    samples: Samples | None = None


def load_examples(session: Session) -> list[Example]:
    items = session.read_json(MANIFEST)["items"]
    return [Example(pixels=pixels_from_png(session.read_bytes(i["file"])), caption=i["caption"],
                    subject=i.get("token", "")) for i in items]


def load_class_examples(manifest: ClassImages | None, session: Session) -> list[Example]:
    if manifest is None:
        return []
    return [Example(pixels_from_png(data), image_set.prompt, image_set.subject)
            for image_set, data in read_class_images(manifest, session)]


def resume_point(store: CheckpointStore, plan: TrainingPlan, end: int) -> Checkpoint | None:
    checkpoint = store.load_latest(max_step=end)
    if checkpoint is not None and checkpoint.meta.get("fingerprint") != plan.fingerprint:
        raise SessionError(
            f"checkpoint at step {checkpoint.step} of session {plan.session.name!r} belongs to "
            "another training configuration. Start a new --session, or delete the session's "
            "checkpoints/ folder to train from the beginning.")
    return checkpoint


def build_trainer(plan: TrainingPlan, session: Session, rank: int = 0, world: int = 1) -> Trainer:
    device = resolve_device(plan.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", rank)
    parts = load_model_parts(plan.model_path, device)
    classes = load_class_examples(plan.class_images, session)
    return Trainer(parts, load_examples(session), plan.options, classes, rank, world)


def train_chunk_steps(plan: TrainingPlan, chunk: Chunk, log: logging.Logger | None = None,
                      after_step: AfterStep | None = None, monitor: TrainingMonitor | None = None,
                      rank: int = 0, world: int = 1) -> ChunkOutcome:
    """Make sure a committed checkpoint at `chunk.end` (or later) exists."""
    log = log or logging.getLogger("dreambooth")
    if plan.gpus > 1 and world == 1:
        return train_chunk_on_processes(plan, chunk, log)
    if world > 1:
        return _train_chunk_as_rank(plan, chunk, log, rank, world)
    session = plan.session.open()
    # Loss log, progress and loss plot; the Prefect task passes one with UI callbacks.
    monitor = monitor or TrainingMonitor(session, [c.end for c in plan.chunks], log)
    store = CheckpointStore(session, plan.keep_checkpoints, log)
    key = (plan.session.uid, plan.fingerprint, plan.model_path, plan.device)
    trainer, start = live.take(key, chunk.start), chunk.start
    if trainer is not None:
        log.info("Continuing from step %d in memory (its checkpoint commits in the background)", start)
    else:
        live.wait_for_commits()
        if store.latest_step() >= chunk.end:
            log.info("Steps %d-%d already committed; nothing to train", chunk.start, chunk.end)
            return ChunkOutcome(end=chunk.end, started_at=chunk.end, trained_steps=0, mean_loss=None)
        trainer, start = _restore(plan, session, store, chunk, log)
    log.info("Chunk %d/%d: training steps %d-%d of %d", chunk.index, chunk.count, start, chunk.end,
             plan.total_steps)
    monitor.chunk_started(start, chunk.end, plan.total_steps)
    # SIGTERM (preemption) stops training after the current step; see preemption.py.
    with stop_requests(plan.preemption_grace) as stop:
        mean_loss, reached = _train(trainer, start, chunk.end, monitor,
                                    _with_snapshots(plan, session, after_step), stop)
        if stop.requested:
            live.wait_for_commits()  # the previous chunk's checkpoint comes first
            save_on_stop(store, trainer, reached, _meta(plan, reached), stop, log)
        else:
            live.commit_in_background(store, chunk.end, trainer.state_writers(), _meta(plan, chunk.end))
    if stop.requested:  # reached only when the previous SIGTERM handler ignores the signal
        raise TrainingStopped(f"training stopped at step {reached} on SIGTERM")
    monitor.chunk_finished()  # timing, loss plot, UI callbacks (loss.csv was written in _train)
    samples = _samples(plan, chunk, session, trainer, log)
    live.keep(key, chunk.end, trainer)
    return ChunkOutcome(end=chunk.end, started_at=start, trained_steps=chunk.end - start,
                        mean_loss=mean_loss, samples=samples)


def _train_chunk_as_rank(plan: TrainingPlan, chunk: Chunk, log: logging.Logger, rank: int,
                         world: int) -> ChunkOutcome:
    """One process of a data-parallel chunk: every rank trains, rank 0 commits and samples."""
    session = plan.session.open()
    store = CheckpointStore(session, plan.keep_checkpoints, log)
    if store.latest_step() >= chunk.end:
        return ChunkOutcome(end=chunk.end, started_at=chunk.end, trained_steps=0, mean_loss=None)
    trainer, start = _restore(plan, session, store, chunk, log, rank, world)
    monitor = TrainingMonitor(session, [c.end for c in plan.chunks], log) if rank == 0 else None
    if monitor:
        monitor.chunk_started(start, chunk.end, plan.total_steps)
    mean_loss, _ = _train(trainer, start, chunk.end, monitor,
                          _with_snapshots(plan, session, None) if rank == 0 else None)
    samples = None
    if monitor:
        store.save(chunk.end, trainer.state_writers(), _meta(plan, chunk.end))
        monitor.chunk_finished()
        samples = _samples(plan, chunk, session, trainer, log)
    return ChunkOutcome(end=chunk.end, started_at=start, trained_steps=chunk.end - start,
                        mean_loss=mean_loss, samples=samples)


def _restore(plan: TrainingPlan, session: Session, store: CheckpointStore, chunk: Chunk,
             log: logging.Logger, rank: int = 0, world: int = 1) -> tuple[Trainer, int]:
    checkpoint = resume_point(store, plan, chunk.end)
    trainer = build_trainer(plan, session, rank, world)
    if checkpoint is None:
        return trainer, 0
    trainer.load_state(checkpoint)
    log.info("Resuming from committed checkpoint at step %d", checkpoint.step)
    return trainer, checkpoint.step


def _meta(plan: TrainingPlan, step: int) -> dict:
    return {"fingerprint": plan.fingerprint, "method": plan.options.method, "samples_seen": step}


def _with_snapshots(plan: TrainingPlan, session: Session, after_step: AfterStep | None) -> AfterStep:
    every, keep = plan.extras.snapshot_every, plan.extras.keep_snapshots

    def after(trainer: Trainer, step: int) -> None:
        if every and step % every == 0:
            write_snapshot(session, plan.model_path, plan.options.method, trainer.parts,
                           trainer.trainables, step, keep)
        if after_step:
            after_step(trainer, step)
    return after


def _samples(plan: TrainingPlan, chunk: Chunk, session: Session, trainer: Trainer,
             log: logging.Logger) -> Samples | None:
    extras = plan.extras
    due = extras.sample_every and (chunk.index % extras.sample_every == 0 or chunk.index == chunk.count)
    if extras.samples is None or not due:
        return None
    parts = trainer.parts
    return render_samples(session, chunk.end, plan.model_path, extras.samples, trainer.device,
                          unet=parts.unet, text_encoder=parts.text_encoder,
                          tokenizer=parts.tokenizer, log=log)


def _train(trainer: Trainer, start: int, end: int, monitor: TrainingMonitor | None,
           after_step: AfterStep | None, stop: StopRequest | None = None) -> tuple[float, int]:
    """Train steps [start, end), or until a stop request. Returns (mean loss, step reached)."""
    losses = []
    for step in range(start, end):
        losses.append(trainer.step(step))
        if monitor:
            # Buffers the loss tensor; reads it (a device sync) and logs every few steps,
            # writing reports/loss.csv before the checkpoint commit.
            monitor.step(step, losses[-1], trainer.optimizer.param_groups[0]["lr"])
        if after_step:
            after_step(trainer, step + 1)
        if stop is not None and stop.requested:
            if monitor:
                monitor.flush(step + 1)
            return torch.stack(losses).mean().item(), step + 1
    return torch.stack(losses).mean().item(), end
