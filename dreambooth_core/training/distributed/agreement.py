"""What the processes of a run agree on between steps: one value for all of them.

Both go through the CPU: workers.py gives every process group gloo for CPU tensors, beside NCCL.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def all_agree(value: bool) -> bool:
    """Whether `value` is true on every process."""
    flag = torch.tensor([float(value)])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def rank_0s(value):
    """Rank 0's `value`, on every process."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
