"""Training one chunk: resume, train, commit. The one body every process runs.

With one process the trainer of the previous chunk is taken from memory when it
stands at this chunk's start, and the checkpoint commits in the background while
the next chunk trains (live.py). With several (workers.py), every rank runs this
same body on its share of each batch; rank 0 commits, reports and renders.
Samples and snapshots reach it as hooks, so training knows nothing of them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict

from dreambooth_core.errors import GpuMemoryError, SessionError, TrainingError
from dreambooth_core.reports.monitor import ChunkReport, Progress, TrainingMonitor
from dreambooth_core.session.checkpoints import Checkpoint, CheckpointStore
from dreambooth_core.session.folder import Session
from dreambooth_core.training.devices import resolve_device, resolve_precision
from dreambooth_core.training.data.examples import load_class_examples, load_examples
from dreambooth_core.training.live import LiveTraining
from dreambooth_core.training.memory.plan import out_of_memory_advice
from dreambooth_core.families import load_model_parts
from dreambooth_core.families.quantised import BasePrecision
from dreambooth_core.training.plan import Chunk, TrainingPlan
from dreambooth_core.training.preemption import StopRequest, TrainingStopped, save_on_stop, stop_requests
from dreambooth_core.training.data.text_embeddings import EmbeddingStore
from dreambooth_core.training.distributed import sharded_checkpoint
from dreambooth_core.training.distributed.agreement import all_agree, rank_0s
from dreambooth_core.training.distributed.sharding import local
from dreambooth_core.training.trainer import Trainer

CHECK_EVERY = 50  # steps between checks that the loss is finite (a sync each)


@dataclass(frozen=True)
class ChunkHooks:
    """What a chunk does besides training, all on rank 0. The first two must be picklable
    (they travel to the training processes); the UI callbacks run in the pipeline's process, relayed
    from rank 0 (worker_group.py)."""

    after_step: Callable[[Trainer, int], None] | None = None  # with the number of steps done
    after_chunk: tuple[Callable[[Trainer, Chunk, logging.Logger], None], ...] = ()  # checkpoint handed off
    on_progress: tuple[Callable[[Progress], None], ...] = ()
    on_chunk_end: tuple[Callable[[ChunkReport], None], ...] = ()


class ChunkOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)
    end: int
    started_at: int
    trained_steps: int
    mean_loss: float | None


def run_chunk(plan: TrainingPlan, chunk: Chunk, live: LiveTraining, hooks: ChunkHooks = ChunkHooks(),
              log: logging.Logger | None = None, rank: int = 0, world: int = 1) -> ChunkOutcome:
    """Make sure a committed checkpoint at `chunk.end` (or later) exists. A CUDA out-of-memory
    error ends it with one paragraph of what to try (GpuMemoryError)."""
    log = log or logging.getLogger("dreambooth")
    with out_of_memory_explained(plan):
        session = plan.session.open()
        store = CheckpointStore(session, plan.runtime.keep_checkpoints, log)
        key = trainer_key(plan)
        trainer, start = live.take(key, chunk.start), chunk.start
        if trainer is not None:
            log.info("Continuing from step %d in memory (its checkpoint commits in the background)", start)
        else:
            live.wait()
            if plan.done.step_done_by(chunk.end):
                log.info("Steps %d-%d already committed; nothing to train", chunk.start, chunk.end)
                return ChunkOutcome(end=chunk.end, started_at=chunk.end, trained_steps=0, mean_loss=None)
            trainer, start = restore(plan, session, store, chunk, log, rank, world)
        lead, commits = rank == 0, rank == 0 or trainer.sharded  # --shard: every process writes its shards
        monitor = TrainingMonitor(session, plan.boundaries, log, on_progress=hooks.on_progress,
                                  on_chunk_end=hooks.on_chunk_end) if lead else None
        if lead:
            log.info("Chunk %d/%d: training steps %d-%d of %d", chunk.index, chunk.count, start, chunk.end,
                     plan.total_steps)
            monitor.chunk_started(start, chunk.end, plan.total_steps)
        # SIGTERM (preemption) stops training after the current step; see preemption.py.
        with stop_requests(plan.runtime.preemption_grace) as stop:
            mean_loss, reached = train_steps(trainer, start, chunk.end, monitor,
                                             hooks.after_step if lead and not trainer.sharded else None, stop)
            if commits and stop.requested:
                live.wait()  # the previous chunk's checkpoint comes first
                save_on_stop(live, store, saver(store, trainer, reached, checkpoint_meta(plan, reached)),
                             reached, stop, log, agree=lambda fits: agreed(fits, trainer))
            elif commits:
                commit(live, store, trainer, chunk.end, checkpoint_meta(plan, chunk.end), log)
        if stop.requested:  # reached only when the previous SIGTERM handler ignores the signal
            raise TrainingStopped(f"training stopped at step {reached} on SIGTERM")
        if lead:
            monitor.chunk_finished()  # timing, loss plot, UI callbacks (loss.csv was written in train_steps)
            run_after_chunk(hooks, trainer, chunk, log)
        live.keep(key, chunk.end, trainer)
        return ChunkOutcome(end=chunk.end, started_at=start, trained_steps=chunk.end - start,
                            mean_loss=mean_loss)


def run_after_chunk(hooks: ChunkHooks, trainer: Trainer, chunk: Chunk, log: logging.Logger) -> None:
    if trainer.sharded and (hooks.after_chunk or hooks.after_step):
        log.info("Samples, snapshots and evaluations are not made while a --shard run trains: each needs "
                 "the whole model on one GPU. The final export is written as usual.")
        return
    for hook in hooks.after_chunk:
        hook(trainer, chunk, log)


@contextlib.contextmanager
def out_of_memory_explained(plan: TrainingPlan) -> Iterator[None]:
    try:
        yield
    except (torch.OutOfMemoryError, OutOfMemoryAtStep) as exc:
        step = exc.step if isinstance(exc, OutOfMemoryAtStep) else None
        raise GpuMemoryError(out_of_memory_advice(plan.training, plan.runtime, plan.memory_plan,
                                                  plan.resolution, step)) from None


class OutOfMemoryAtStep(Exception):
    def __init__(self, step: int):
        super().__init__(f"out of memory at step {step}")
        self.step = step


def trainer_key(plan: TrainingPlan) -> tuple:
    """What a trainer kept in memory must match to continue a chunk."""
    return plan.session.uid, plan.fingerprint, plan.model_path, plan.runtime.device


def commit(live: LiveTraining, store: CheckpointStore, trainer: Trainer, step: int, meta: dict,
           log: logging.Logger) -> None:
    """In the background from a host copy when host memory has room for one; else now, from the
    live tensors one at a time (training waits for the write). --shard: now, by every process."""
    if trainer.sharded:
        live.wait()
        live.timed(saver(store, trainer, step, meta))
        return
    size, available = trainer.state_bytes(), available_host_bytes()
    if copy_fits(size, available):
        live.commit_in_background(store, step, trainer.state_writers(), meta)
        return
    log.info("Host memory is short (%.1f GiB available for a %.1f GiB copy of the state): committing step %d "
             "without a copy; training waits for the write", available / 2**30, size / 2**30, step)
    live.wait()
    live.save(store, step, trainer.state_writers(copy=False), meta)


def saver(store: CheckpointStore, trainer: Trainer, step: int, meta: dict) -> Callable[[], None]:
    """What commits the trainer's state at `step` now, from the live tensors (training waits)."""
    if trainer.sharded:
        return lambda: sharded_checkpoint.save(store, step, trainer.sharded_state(), meta)
    return lambda: store.save(step, trainer.state_writers(copy=False), meta)


def agreed(value: bool, trainer: Trainer) -> bool:
    """Rank 0's `value` on every process of a --shard run (they save together); else `value`."""
    return rank_0s(value) if trainer.sharded else value


def copy_fits(state_bytes: int, available_bytes: int) -> bool:
    """Room for a host copy of the state, with a quarter and 1 GiB to spare for everything else."""
    return available_bytes >= state_bytes * 1.25 + 2**30


def available_host_bytes() -> int:
    import psutil

    return psutil.virtual_memory().available


def resume_point(store: CheckpointStore, plan: TrainingPlan, end: int) -> Checkpoint | None:
    checkpoint = store.load_latest(max_step=end)
    if checkpoint is not None and checkpoint.meta.get("fingerprint") != plan.fingerprint:
        raise SessionError(
            f"checkpoint at step {checkpoint.step} of session {plan.session.name!r} belongs to "
            "another training configuration. Start a new --session, or delete the session's "
            "checkpoints/ folder to train from the beginning.")
    return checkpoint


def build_trainer(plan: TrainingPlan, session: Session, rank: int = 0, world: int = 1) -> Trainer:
    device = resolve_device(plan.runtime.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())  # workers.py set this process's GPU
    # On the CPU: the Trainer moves them, once cast (nf4 loads onto the GPU: bitsandbytes quantises there).
    training = plan.training
    base = BasePrecision(training.base_precision, resolve_precision(training.mixed_precision, device))
    parts = load_model_parts(plan.model_path, torch.device("cpu"), base=base)
    examples = load_examples(session, crops=parts.family.uses_crop_boxes, masks=training.masked_loss)
    store = EmbeddingStore(session, plan.fingerprint, writes=rank == 0)
    classes = load_class_examples(plan.class_images, session)
    return Trainer(parts, examples, plan.training, plan.total_steps, plan.runtime, classes,
                   plan.initializer_word, rank, world, device, store)


def restore(plan: TrainingPlan, session: Session, store: CheckpointStore, chunk: Chunk,
            log: logging.Logger, rank: int = 0, world: int = 1) -> tuple[Trainer, int]:
    checkpoint = resume_point(store, plan, chunk.end)
    log.info("Loading the base model from %s", plan.model_path)
    trainer = build_trainer(plan, session, rank, world)
    while checkpoint is not None and not load_checkpoint(trainer, store, checkpoint):
        checkpoint = resume_point(store, plan, chunk.end)  # that one was corrupt, and is uncommitted
    if checkpoint is None:
        return trainer, 0
    log.info("Resuming from committed checkpoint at step %d", checkpoint.step)
    return trainer, checkpoint.step


def load_checkpoint(trainer: Trainer, store: CheckpointStore, checkpoint: Checkpoint) -> bool:
    """Whether the trainer now holds the checkpoint's state (--shard: False when a file of its
    sharded state does not verify)."""
    if not trainer.sharded:
        trainer.load_state(checkpoint)
        return True
    state = trainer.sharded_state()
    if not sharded_checkpoint.load(store, checkpoint, state):
        return False
    trainer.load_sharded_state(state)
    return True


def checkpoint_meta(plan: TrainingPlan, step: int) -> dict:
    return {"fingerprint": plan.fingerprint, "method": plan.training.method, "samples_seen": step,
            "run": plan.done.run}  # what marks a result as this run's (session/state.py Committed)


def train_steps(trainer: Trainer, start: int, end: int, monitor: TrainingMonitor | None,
                after_step: Callable[[Trainer, int], None] | None,
                stop: StopRequest | None = None) -> tuple[float, int]:
    """Train steps [start, end), or until a stop request. Returns (mean loss, step reached).
    A loss or weight that is not finite raises a TrainingError before anything commits."""
    losses = []
    for step in range(start, end):
        try:
            losses.append(trainer.step(step))
        except torch.OutOfMemoryError:
            raise OutOfMemoryAtStep(step) from None
        if monitor:
            # Buffers the loss tensor; reads it (a device sync) and logs every few steps,
            # writing reports/loss.csv before the checkpoint commit.
            monitor.step(step, losses[-1], trainer.optimizer.param_groups[0]["lr"])
        if (step + 1 - start) % CHECK_EVERY == 0:
            check_finite(trainer, losses, start, step + 1, with_weights=False)  # stop early
        if after_step:
            after_step(trainer, step + 1)
        if stop is not None and stop.agreed(trainer.world, trainer.device):
            if monitor:
                monitor.flush(step + 1)
            check_finite(trainer, losses, start, step + 1)
            return torch.stack(losses).mean().item(), step + 1
    check_finite(trainer, losses, start, end)
    return torch.stack(losses).mean().item(), end


def check_finite(trainer: Trainer, losses: list[torch.Tensor], start: int, reached: int,
                 with_weights: bool = True) -> None:
    weights = [local(w) for w in trainer.trainables.named().values()] if with_weights else []
    advice = divergence_advice(trainer.settings.base_learning_rate, trainer.precision)
    check_training_finite(losses, weights, start, reached, advice, trainer.world)


def first_bad_step(losses: list[torch.Tensor], start: int, world: int = 1) -> int | None:
    """The 1-based step whose loss is not finite, first of steps start+1... (None: all are).
    With several processes they agree on it, so they all stop at the same step."""
    bad = (~torch.isfinite(torch.stack(losses).float())).float()
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    found = bad.nonzero()
    return start + int(found[0]) + 1 if len(found) else None


def all_finite(finite: bool, world: int) -> bool:
    """Whether every process's weights are finite (--shard: each checked only its shards)."""
    return finite if world == 1 else all_agree(finite)


def weights_finite(tensors: list[torch.Tensor], dtype: torch.dtype | None = None) -> bool:
    """Whether every value is finite (also once cast to `dtype`: fp16 ends at 65504)."""
    if not tensors:
        return True
    # One device for the flags: --offload keeps most trained weights on the host, the rest on the
    # GPU.
    device = next((t.device for t in tensors if t.device.type != "cpu"), tensors[0].device)
    flags = torch.stack([torch.isfinite(t.detach() if dtype is None else t.detach().to(dtype)).all()
                         .to(device) for t in tensors])
    return bool(flags.all())


def check_training_finite(losses: list[torch.Tensor], weights: list[torch.Tensor], start: int,
                          reached: int, advice: str, world: int = 1) -> None:
    """Raise a TrainingError naming the first bad step when training went non-finite in
    steps start+1..reached; the checkpoint at `start` (if any) stays the latest.

    NaN spreads through every later step, so a checkpoint of it would become the latest one and
    the export a model of NaNs. The check reads the chunk's losses in one batch (a host-device
    sync, as the loss log's own reads are) and reduces each trained tensor to one flag on the
    device."""
    step = first_bad_step(losses, start, world)
    if step is None and all_finite(weights_finite(weights), world):
        return
    what = (f"the loss became {_value(losses[step - start - 1])} at step {step}" if step is not None
            else f"the weights became NaN or infinite by step {reached}")
    kept = f"the checkpoint at step {start} stays the latest" if start else "nothing was committed"
    raise TrainingError(f"training stopped: {what}. Steps {start + 1}-{reached} were not saved "
                        f"({kept}), so no model of NaNs is written. {advice}")


def _value(loss: torch.Tensor) -> str:
    value = float(loss)
    return "NaN" if value != value else "infinite"


def divergence_advice(learning_rate: float, precision: str) -> str:
    """What to try, given this run's learning rate and autocast precision. Both settings
    change training, so they take a new session."""
    tips = [f"a lower --learning-rate (this run: {learning_rate:g})"]
    if precision != "no":
        tips.append(f"--mixed-precision no (fp32; this run: {precision})")
    if precision != "fp16":
        tips.append("on a GPU, --mixed-precision fp16, whose loss scaling skips steps that "
                    "overflow")
    return "Train a new --session with " + ", or ".join(tips) + "."
