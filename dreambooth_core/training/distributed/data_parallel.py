"""Gradients averaged over the --gpus processes: PyTorch DDP around the modules that train.

DDP groups gradients in buckets and all-reduces each bucket as soon as the backward
pass has produced it, so communication overlaps the rest of the backward pass. Only
with more than one process: a single process trains the plain modules, exactly as
before.

`find_unused_parameters=True`, for exact resume more than anything: with it, DDP keeps
the bucket layout it starts with. Without it the first step reduces everything in one
bucket and later steps use buckets rebuilt from the order gradients arrived in; with
more than two processes the order of each sum depends on where a gradient sits in its
bucket, so a process started mid-run (a resume) would round differently from one that
had been running. It also lets a step leave a parameter without a gradient instead of
hanging. The cost is one walk of the autograd graph per forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.nn.parallel import DistributedDataParallel


def share_gradients(module: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    """`module` wrapped so that backward leaves every process the mean of all processes'
    gradients. Rank 0's weights are copied to every process first (they are equal anyway)."""
    on_gpu = device.type == "cuda"
    return DistributedDataParallel(
        module, device_ids=[device.index] if on_gpu else None, output_device=device.index if on_gpu else None,
        find_unused_parameters=True,
        gradient_as_bucket_view=True)  # gradients live in the buckets: no second copy of them


@contextlib.contextmanager
def gradients_kept_local(wrappers: list[torch.nn.Module], local: bool) -> Iterator[None]:
    """While `local`, backward adds to this process's gradients without communicating
    (the micro-batches of gradient accumulation before the last). `wrappers`: DDP wrappers, and
    a --shard run's sharded denoiser (FSDP2 then keeps whole gradients until the last)."""
    from torch.distributed.fsdp import FSDPModule

    with contextlib.ExitStack() as stack:
        if local:
            for wrapper in wrappers:
                if isinstance(wrapper, FSDPModule):
                    wrapper.set_requires_gradient_sync(False)
                    stack.callback(wrapper.set_requires_gradient_sync, True)
                else:
                    stack.enter_context(wrapper.no_sync())
        yield
