"""Which examples, flips and class images one micro-batch uses: a function of (seed, step)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dreambooth_core.training.randomness import balanced_example_index, generator_for


@dataclass(frozen=True)
class Draw:
    instances: list[int]   # indices into the instance examples
    classes: list[int]     # indices into the class examples, one per instance (or none)
    flips: list[bool]      # one per instance, then one per class example
    generator: torch.Generator  # continues with latent, noise and timestep draws


def draw_micro_batch(seed: int, step: int, micro: int, batch_size: int, accumulation: int,
                     groups: list[list[int]], class_groups: list[list[int]], flip: bool,
                     rank: int = 0, world: int = 1) -> Draw:
    """Sample n = ((step * accumulation + micro) * world + rank) * batch_size + k picks
    instance k of process `rank`, so with one process, batch 1 and no accumulation the
    data order is the one of plain step numbers."""
    first = ((step * accumulation + micro) * world + rank) * batch_size
    instances = [balanced_example_index(seed, first + k, groups) for k in range(batch_size)]
    draw = generator_for(seed, step, f"batch:{micro}" + (f":{rank}" if rank else ""))
    classes = []
    if class_groups:
        subject_of = {i: s for s, members in enumerate(groups) for i in members}
        for index in instances:
            members = class_groups[subject_of[index]]
            classes.append(members[int(torch.randint(len(members), (1,), generator=draw))])
    count = len(instances) + len(classes)
    flips = (torch.rand(count, generator=draw) < 0.5).tolist() if flip else [False] * count
    return Draw(instances, classes, flips, draw)
