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
                     rank: int = 0, world: int = 1, buckets: list[int] | None = None,
                     class_buckets: list[int] | None = None) -> Draw:
    """Sample n = ((step * accumulation + micro) * world + rank) * batch_size + k picks
    instance k of process `rank`, so with one process, batch 1 and no accumulation the
    data order is the one of plain step numbers.

    `buckets`: each instance example's aspect-ratio bucket, `class_buckets` each class example's
    (None: one size for all). With several buckets a batch comes from one: batch b (= n //
    batch_size) is led by the example sample b would pick, the rest are drawn from its bucket, and
    each class image from the bucket of its instance; with batch 1 the order is the one above."""
    first = ((step * accumulation + micro) * world + rank) * batch_size
    draw = generator_for(seed, step, f"batch:{micro}" + (f":{rank}" if rank else ""))
    several = buckets is not None and len(set(buckets)) > 1
    if several:
        lead = balanced_example_index(seed, first // batch_size, groups)
        instances = [lead, *_bucket_mates(lead, buckets, batch_size - 1, draw)]
    else:
        instances = [balanced_example_index(seed, first + k, groups) for k in range(batch_size)]
    classes = []
    if class_groups:
        subject_of = {i: s for s, members in enumerate(groups) for i in members}
        for index in instances:
            members = class_groups[subject_of[index]]
            if several:
                members = [c for c in members if class_buckets[c] == buckets[index]]
            classes.append(members[int(torch.randint(len(members), (1,), generator=draw))])
    count = len(instances) + len(classes)
    flips = (torch.rand(count, generator=draw) < 0.5).tolist() if flip else [False] * count
    return Draw(instances, classes, flips, draw)


def _bucket_mates(lead: int, buckets: list[int], count: int, draw: torch.Generator) -> list[int]:
    """`count` other examples of `lead`'s bucket, in an order drawn from `draw` (repeated when the
    bucket has fewer; the lead itself when it is alone)."""
    if count <= 0:
        return []
    others = [i for i, bucket in enumerate(buckets) if bucket == buckets[lead] and i != lead] or [lead]
    order = torch.randperm(len(others), generator=draw).tolist()
    return [others[order[k % len(others)]] for k in range(count)]
