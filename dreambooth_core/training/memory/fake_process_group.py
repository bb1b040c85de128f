"""A function run as rank 0 of N processes that do not exist: in a spawned process, inside a default
process group of torch's "fake" backend (collectives that return at once and move no data).

What --shard's estimate runs in (estimate.py): the training step shards the denoiser with FSDP2
as a real run does, over fake tensors, which have no data to move anyway. A process of its own,
so that the one asking (the CLI, a flow, a worker already in a real process group) is neither
left with a process group nor confused by its own.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, TypeVar

Result = TypeVar("Result")

# Their notices in the spawned process concern models built from configs only to be measured (a
# cast of fresh weights): errors only.
QUIETED = ("diffusers", "transformers")


def run_as_rank_0_of(world: int, function: Callable[..., Result], /, *args, **kwargs) -> Result:
    """`function(*args, **kwargs)` (all picklable) as rank 0 of `world` fake processes."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as process:
        return process.submit(_in_fake_group, world, function, args, kwargs).result()


def _in_fake_group(world: int, function: Callable[..., Result], args: tuple, kwargs: dict) -> Result:
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    _libraries_quiet()
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world)
    try:
        return function(*args, **kwargs)
    finally:
        dist.destroy_process_group()


def _libraries_quiet() -> None:
    import importlib

    for name in QUIETED:
        importlib.import_module(f"{name}.utils.logging").set_verbosity_error()
