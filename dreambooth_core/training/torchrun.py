"""Training processes that torchrun started (several nodes, or a pod with several GPUs).

torchrun starts every process itself and tells each one its place in the environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so each process joins that
process group instead of spawning workers (launcher.py). Rank 0 runs the pipeline as
usual; before each chunk it trains, it sends the chunk to the other ranks, which wait for
chunks (`follow_chunks`), train their share of each with the same chunk body (chunk.py)
and end when rank 0 sends none. Every rank keeps its trainer between chunks, so chunks
after the first continue in memory as a single process does.

Chunks travel on a gloo group of their own with a long timeout: rank 0 may prepare
photos and class images for a long time before the first chunk.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from datetime import timedelta

from dreambooth_core.errors import TrainingError
from dreambooth_core.session.storage import block_storage_loader, use_block_storage
from dreambooth_core.training.chunk import ChunkHooks, ChunkOutcome, train_chunk, trainer_key
from dreambooth_core.training.live import LiveTraining
from dreambooth_core.training.plan import Chunk, TrainingPlan
from dreambooth_core.training.rank_log import rank_log
from dreambooth_core.training.torchrun_env import torchrun_rank, torchrun_world

ORDERS_TIMEOUT = timedelta(days=2)  # rank 0's work between chunks: photos, class images, samples
_orders = None  # the gloo group chunks travel on, once this process has joined


def _join():
    """The process group torchrun set up (joined once per process), and the orders group."""
    global _orders
    if _orders is None:
        import torch
        import torch.distributed as dist

        backend = "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
            backend = "cpu:gloo,cuda:nccl"  # training on GPUs through NCCL, with --device cpu through gloo
        dist.init_process_group(backend, init_method="env://")
        _orders = dist.new_group(backend="gloo", timeout=ORDERS_TIMEOUT)
    return _orders


def _send(order: tuple | None) -> None:
    import torch.distributed as dist

    dist.broadcast_object_list([order], src=0, group=_join())


def _receive() -> tuple | None:
    import torch.distributed as dist

    box = [None]
    dist.broadcast_object_list(box, src=0, group=_join())
    return box[0]


@contextlib.contextmanager
def leading_followers() -> Iterator[None]:
    """On rank 0 of a torchrun launch: join the group now (the others wait for it), and tell
    them to end when the block does, however it ends. Elsewhere: nothing."""
    if torchrun_rank() != 0 or torchrun_world() == 1:
        yield
        return
    import torch.distributed as dist

    global _orders
    _join()
    try:
        yield
    finally:
        _send(None)
        dist.destroy_process_group()
        _orders = None


def lead_chunk(plan: TrainingPlan, chunk: Chunk, live: LiveTraining, hooks: ChunkHooks,
               log: logging.Logger) -> ChunkOutcome:
    """Rank 0: send the chunk to the other ranks, then train its own share."""
    in_memory = live.holds(trainer_key(plan), chunk.start)
    if not in_memory:
        live.wait()  # every rank then reads the same latest checkpoint
    _send((plan, chunk, in_memory, block_storage_loader()))
    return train_chunk(plan, chunk, live, hooks, log, 0, torchrun_world())


def follow_chunks() -> None:
    """Ranks above 0: train the chunks rank 0 sends until it sends none."""
    import torch.distributed as dist

    rank, world = torchrun_rank(), torchrun_world()
    _join()
    log = rank_log(rank)
    try:
        with LiveTraining() as live:
            while (order := _receive()) is not None:
                plan, chunk, in_memory, loader = order
                use_block_storage(loader)
                if not in_memory:
                    live.release()  # rank 0 restores from the checkpoint: so does every rank
                assert live.holds(trainer_key(plan), chunk.start) == in_memory, "ranks disagree on the trainer"
                try:
                    train_chunk(plan, chunk, live, ChunkHooks(), log, rank, world)
                except TrainingError as exc:  # every rank stops together (finite.py); rank 0 tells the user
                    log.info("stopped with rank 0: %s", str(exc).split(".")[0])
    finally:
        dist.destroy_process_group()
