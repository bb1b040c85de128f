"""--shard: the denoiser's trained weights spread over the --gpus processes with FSDP2.

Each process holds 1/N of every trained weight of the denoiser, of its gradient and of its
optimizer state (`torch.distributed.fsdp.fully_shard`: the weights become DTensors sharded
on their first dimension). A block's weights are gathered whole just before its forward and
backward and dropped after, and its gradients are averaged and scattered back into the shards
(reduce-scatter) as backward leaves it. The unit of gathering is every block of the denoiser's
block lists (a UNet's down and up blocks, a transformer's blocks), then the rest of it: at most
one block's weights stand whole beside the shards. The text encoders, small beside the
denoiser, stay whole on every process (DDP when they train, as without --shard).

Checkpoints of a sharded run are written by every process at once with
torch.distributed.checkpoint (sharded_checkpoint.py), which can load them on another number of
processes.
"""

from __future__ import annotations

import functools

import torch

from dreambooth_core.training.methods import Trainables


def shard_denoiser(denoiser: torch.nn.Module, trainables: Trainables, device: torch.device) -> None:
    """Shard `denoiser` in place over the default process group and point `trainables` at its
    sharded weights (fully_shard replaces each parameter by a DTensor parameter)."""
    from torch.distributed.fsdp import fully_shard

    mesh = device_mesh(device.type)
    for blocks in denoiser.children():
        if isinstance(blocks, torch.nn.ModuleList):
            for block in blocks:
                if any(p.requires_grad for p in block.parameters()):
                    fully_shard(block, mesh=mesh)
    fully_shard(denoiser, mesh=mesh)
    trainables.denoiser = {n: p for n, p in denoiser.named_parameters() if p.requires_grad}


@functools.cache
def device_mesh(device_type: str):
    """All processes of the default group, in one dimension: built once per process."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device_type, (dist.get_world_size(),))


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of a sharded tensor; any other tensor as it is."""
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


@torch.no_grad()
def clip_gradients(parameters: list[torch.Tensor], max_norm: float) -> None:
    """clip_grad_norm_ over sharded and whole gradients together (torch's own takes one kind):
    the norm of all of them, from each kind's norm (a sharded gradient's is reduced over the
    processes), then every gradient scaled by the same factor."""
    from torch.distributed.tensor import DTensor

    sharded = [p.grad for p in parameters if isinstance(p.grad, DTensor)]
    whole = [p.grad for p in parameters if p.grad is not None and not isinstance(p.grad, DTensor)]
    squares = [torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in kind]))
               for kind in (sharded, whole) if kind]
    squares = [(n.full_tensor() if isinstance(n, DTensor) else n) ** 2 for n in squares]
    if not squares:
        return
    total = torch.stack([s.to(squares[0].device) for s in squares]).sum().sqrt()
    factor = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for gradient in [*sharded, *whole]:
        local(gradient).mul_(factor.to(local(gradient).device, local(gradient).dtype))
