"""Where a chunk trains: in this process, or data-parallel in --gpus processes.

Several processes (one per GPU; CPU processes for tests) each run the chunk body
(chunk.py) on their own share of every step's batch (a function of seed, step and
rank); DDP averages the gradients in buckets during the backward pass (NCCL on GPUs,
gloo on CPUs; data_parallel.py), and every process takes the same optimizer step, so
the weights stay identical. Process 0 commits the checkpoint and runs the hooks.
Everything stays a function of (seed, step, number of processes), so resume is exact
for a given --gpus. A SIGTERM to this process is passed on to every training process,
which stop together after the same step.

Started by torchrun instead (torchrun.py), the processes exist already: this one is
rank 0 and sends each chunk to the others rather than spawning them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import tempfile
from pathlib import Path

import torch

from dreambooth_core import errors
from dreambooth_core.session.storage import BlockLoader, block_storage_loader, use_block_storage
from dreambooth_core.training.chunk import ChunkHooks, ChunkOutcome, train_chunk
from dreambooth_core.training.devices import resolve_device
from dreambooth_core.training.live import LiveTraining
from dreambooth_core.training.plan import Chunk, TrainingPlan
from dreambooth_core.training.preemption import stop_requests
from dreambooth_core.training.rank_log import rank_log
from dreambooth_core.training.torchrun import lead_chunk
from dreambooth_core.training.torchrun_env import torchrun_rank


def run_chunk(plan: TrainingPlan, chunk: Chunk, live: LiveTraining, hooks: ChunkHooks = ChunkHooks(),
              log: logging.Logger | None = None) -> ChunkOutcome:
    """Make sure a committed checkpoint at `chunk.end` (or later) exists."""
    log = log or logging.getLogger("dreambooth")
    if plan.training.gpus == 1:
        return train_chunk(plan, chunk, live, hooks, log)
    if torchrun_rank() is not None:  # torchrun started the processes: this one is rank 0
        return lead_chunk(plan, chunk, live, hooks, log)
    live.wait()
    live.release()  # a trainer kept by this process cannot stand in for the workers' ones
    return _train_on_processes(plan, chunk, hooks.for_workers(), log)


def _train_on_processes(plan: TrainingPlan, chunk: Chunk, hooks: ChunkHooks, log: logging.Logger) -> ChunkOutcome:
    import torch.multiprocessing as mp

    world = plan.training.gpus
    with tempfile.TemporaryDirectory(prefix="dreambooth-ddp-") as tmp, \
            stop_requests(plan.runtime.preemption_grace) as stop:
        result = Path(tmp) / "outcome.json"
        log.info("Training steps %d-%d on %d processes", chunk.start, chunk.end, world)
        # Only a session on a storage block needs the blocks (and so Prefect) in the workers.
        loader = block_storage_loader() if plan.session.storage_block else None
        workers = mp.start_processes(_worker, args=(plan, chunk, hooks, _free_port(), str(result), loader),
                                     nprocs=world, start_method="spawn", join=False)
        stop.on_request = lambda: [os.kill(pid, signal.SIGTERM) for pid in workers.pids()]
        try:
            while not workers.join():
                pass
        except (mp.ProcessRaisedException, mp.ProcessExitedException):
            _raise_user_error_of(Path(tmp), world)
            raise
        return ChunkOutcome.model_validate_json(result.read_text())


def _error_file(folder: Path, rank: int) -> Path:
    return folder / f"error-{rank}.json"


def _raise_user_error_of(folder: Path, world: int) -> None:
    """A worker's error for the user (bad data, no space, NaN) as the same error here: one
    paragraph, not the worker's traceback."""
    for rank in range(world):
        if _error_file(folder, rank).is_file():
            error = json.loads(_error_file(folder, rank).read_text())
            kind = getattr(errors, error["kind"], None)
            if isinstance(kind, type) and issubclass(kind, (errors.DreamBoothError, errors.NetworkError)):
                raise kind(error["message"]) from None


def _worker(rank: int, plan: TrainingPlan, chunk: Chunk, hooks: ChunkHooks, port: int, result: str,
            block_loader: BlockLoader | None) -> None:
    import torch.distributed as dist

    use_block_storage(block_loader)  # a new process: tell it again how blocks open storage
    world = plan.training.gpus
    device = resolve_device(plan.runtime.device)
    if device.type == "cuda":
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        with LiveTraining() as live:  # leaving it waits for rank 0's commit
            outcome = train_chunk(plan, chunk, live, hooks, rank_log(rank), rank, world)
        if rank == 0:
            Path(result).write_text(outcome.model_dump_json())
        dist.barrier()
    except (errors.DreamBoothError, errors.NetworkError) as exc:
        error = {"kind": type(exc).__name__, "message": str(exc)}
        _error_file(Path(result).parent, rank).write_text(json.dumps(error))
        raise
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
