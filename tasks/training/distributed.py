"""Data-parallel training of one chunk on several GPUs (or, for tests, CPU processes).

The chunk task starts one process per GPU. Each draws its own share of every
step's batch (a function of seed, step and rank), gradients are averaged with
one all-reduce per step (NCCL on GPUs, gloo on CPUs), and every process takes
the same optimizer step, so the weights stay identical. Process 0 commits the
checkpoint and renders samples. Everything stays a function of (seed, step,
number of processes), so resume is exact for a given --gpus.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
from pathlib import Path

import torch

from tasks.config import Chunk
from tasks.errors import ConfigError


def check_processes(gpus: int, device: torch.device) -> None:
    if gpus > 1 and device.type == "cuda" and torch.cuda.device_count() < gpus:
        raise ConfigError(f"--gpus {gpus} needs {gpus} GPUs; this machine has "
                          f"{torch.cuda.device_count()}. Pass --gpus {max(1, torch.cuda.device_count())}.")


def train_chunk_on_processes(plan, chunk: Chunk, log: logging.Logger):
    """Run the chunk on plan.gpus processes; returns process 0's ChunkOutcome."""
    import torch.multiprocessing as mp

    from tasks.training.run import ChunkOutcome

    with tempfile.TemporaryDirectory(prefix="dreambooth-ddp-") as tmp:
        result = Path(tmp) / "outcome.json"
        log.info("Training steps %d-%d on %d processes", chunk.start, chunk.end, plan.gpus)
        mp.start_processes(_worker, args=(plan.model_dump_json(), chunk.model_dump_json(),
                                          _free_port(), str(result)),
                           nprocs=plan.gpus, start_method="spawn", join=True)
        return ChunkOutcome.model_validate_json(result.read_text())


def _worker(rank: int, plan_json: str, chunk_json: str, port: int, result: str) -> None:
    import torch.distributed as dist

    from tasks.training.model_parts import resolve_device
    from tasks.training.plan import TrainingPlan
    from tasks.training.run import train_chunk_steps

    plan, chunk = TrainingPlan.model_validate_json(plan_json), Chunk.model_validate_json(chunk_json)
    device = resolve_device(plan.device)
    if device.type == "cuda":
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // plan.gpus))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=plan.gpus)
    try:
        logging.basicConfig(level=logging.INFO, format=f"rank {rank} | %(message)s")
        log = logging.getLogger("dreambooth")
        outcome = train_chunk_steps(plan, chunk, log, rank=rank, world=plan.gpus)
        if rank == 0:
            Path(result).write_text(json.dumps(outcome.model_dump(mode="json")))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
