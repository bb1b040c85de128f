"""Where a chunk trains: in this process, or data-parallel in the --gpus processes of the run.

Several processes (one per GPU; CPU processes for tests), started by torchrun once per
run (worker_group.py), each run the chunk body (chunk.py) on their own share of every
step's batch (its rows of one process's draws for the whole batch: batches.py); DDP
averages the gradients in buckets during the backward pass (NCCL on GPUs, gloo on CPUs;
data_parallel.py), and every process takes the same optimizer step, so the weights stay
identical. Rank 0 commits the checkpoint and runs the hooks. Everything stays a function
of (seed, step, number of processes), so resume is exact for a given --gpus.
"""

from __future__ import annotations

import logging

from dreambooth_core.training.chunk import ChunkHooks, ChunkOutcome, train_chunk, trainer_key
from dreambooth_core.training.live import LiveTraining
from dreambooth_core.training.plan import Chunk, TrainingPlan
from dreambooth_core.training.distributed.worker_group import WorkerGroup


def run_chunk(plan: TrainingPlan, chunk: Chunk, live: LiveTraining, hooks: ChunkHooks = ChunkHooks(),
              log: logging.Logger | None = None) -> ChunkOutcome:
    """Make sure a committed checkpoint at `chunk.end` (or later) exists."""
    log = log or logging.getLogger("dreambooth")
    if plan.training.gpus == 1:
        return train_chunk(plan, chunk, live, hooks, log)
    group = live.workers(trainer_key(plan), lambda: WorkerGroup(plan.runtime, plan.training.gpus, log))
    log.info("Training steps %d-%d on %d processes", chunk.start, chunk.end, plan.training.gpus)
    return group.train(plan, chunk, hooks)
