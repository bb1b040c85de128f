"""All training randomness as a pure function of (seed, step, stream).

Nothing random carries hidden state from one step to the next, so resuming at
step N needs no saved RNG state and draws exactly what an uninterrupted run
would have drawn. Draws happen on the CPU, so they do not depend on the device.
"""

from __future__ import annotations

import hashlib

import torch


def generator_for(seed: int, step: int, stream: str) -> torch.Generator:
    key = hashlib.blake2b(f"{seed}:{step}:{stream}".encode(), digest_size=8).digest()
    return torch.Generator("cpu").manual_seed(int.from_bytes(key, "little") >> 1)


def example_index(seed: int, step: int, count: int) -> int:
    """Each epoch visits every example once, in an order drawn from (seed, epoch)."""
    epoch, position = divmod(step, count)
    order = torch.randperm(count, generator=generator_for(seed, epoch, "order"))
    return int(order[position])
