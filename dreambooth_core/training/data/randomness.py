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


def example_index(seed: int, step: int, count: int, stream: str = "order") -> int:
    """Each epoch visits every example once, in an order drawn from (seed, epoch)."""
    epoch, position = divmod(step, count)
    order = torch.randperm(count, generator=generator_for(seed, epoch, stream))
    return int(order[position])


def balanced_example_index(seed: int, step: int, groups: list[list[int]]) -> int:
    """The example for `step` when examples are grouped by subject.

    Every round of len(groups) steps visits each subject once, in an order drawn
    from (seed, round), so a subject with 5 photos trains as often as one with
    20; round r is that subject's r-th visit, which picks a photo the way
    example_index does. With one subject this is example_index exactly."""
    if len(groups) == 1:
        return groups[0][example_index(seed, step, len(groups[0]))]
    visit = step // len(groups)
    subject = example_index(seed, step, len(groups), "subjects")
    photos = groups[subject]
    return photos[example_index(seed, visit, len(photos), f"order-{subject}")]
