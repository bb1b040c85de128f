"""Which examples, flips and class images one micro-batch uses: a function of (seed, step).

With several processes, each takes its rows of the draws one process makes for the whole
batch (the batch of all processes together): N processes with batch size b draw what one
process draws with batch size N x b, and so train what it trains, up to the order in which
floats are summed."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dreambooth_core.training.data.randomness import balanced_example_index, generator_for


@dataclass(frozen=True)
class Draw:
    instances: list[int]   # indices into the instance examples
    classes: list[int]     # indices into the class examples, one per instance (or none)
    flips: list[bool]      # one per instance, then one per class example
    generator: torch.Generator  # continues with latent, noise and timestep draws
    # Several processes: this process's rows of the whole batch (its instances, then their class
    # examples), and that batch's size. None: one process, whose rows are the whole batch.
    rows: list[int] | None = None
    size: int = 0

    def spread(self, mine: torch.Tensor) -> torch.Tensor:
        """`mine` (a value per row of this process) placed in its rows of a batch of zeros of the
        whole batch's size, so that the generator's draws over it are one process's draws."""
        if self.rows is None:
            return mine
        whole = mine.new_zeros((self.size, *mine.shape[1:]))
        whole[self.rows] = mine
        return whole

    def mine(self, whole: torch.Tensor) -> torch.Tensor:
        return whole if self.rows is None else whole[self.rows]


def draw_micro_batch(seed: int, step: int, micro: int, batch_size: int, accumulation: int,
                     groups: list[list[int]], class_groups: list[list[int]], flip: bool,
                     rank: int = 0, world: int = 1, buckets: list[int] | None = None,
                     class_buckets: list[int] | None = None) -> Draw:
    """Sample n = (step * accumulation + micro) * batch + k picks instance k of the whole batch
    (batch = batch_size x world), so with one process, batch 1 and no accumulation the data
    order is the one of plain step numbers; process `rank` takes instances rank x batch_size
    to (rank + 1) x batch_size - 1 of it, and their class examples and flips.

    `buckets`: each instance example's aspect-ratio bucket, `class_buckets` each class example's
    (None: one size for all). With several buckets a whole batch comes from one: batch b (= n //
    batch) is led by the example sample b would pick, the rest are drawn from its bucket, and
    each class image from the bucket of its instance; with batch 1 the order is the one above."""
    batch = batch_size * world
    first = (step * accumulation + micro) * batch
    draw = generator_for(seed, step, f"batch:{micro}")
    several = buckets is not None and len(set(buckets)) > 1
    if several:
        lead = balanced_example_index(seed, first // batch, groups)
        instances = [lead, *_bucket_mates(lead, buckets, batch - 1, draw)]
    else:
        instances = [balanced_example_index(seed, first + k, groups) for k in range(batch)]
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
    if world == 1:
        return Draw(instances, classes, flips, draw)
    own = range(rank * batch_size, (rank + 1) * batch_size)
    rows = [*own, *(batch + k for k in own)] if classes else list(own)
    return Draw([instances[k] for k in own], [classes[k] for k in own] if classes else [],
                [flips[r] for r in rows], draw, rows, count)


def _bucket_mates(lead: int, buckets: list[int], count: int, draw: torch.Generator) -> list[int]:
    """`count` other examples of `lead`'s bucket, in an order drawn from `draw` (repeated when the
    bucket has fewer; the lead itself when it is alone)."""
    if count <= 0:
        return []
    others = [i for i, bucket in enumerate(buckets) if bucket == buckets[lead] and i != lead] or [lead]
    order = torch.randperm(len(others), generator=draw).tolist()
    return [others[order[k % len(others)]] for k in range(count)]
