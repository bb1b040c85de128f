"""Whether torchrun started this process, from the environment it sets; nothing heavy is
imported, so the CLI can ask before the training libraries load."""

from __future__ import annotations

import os


def torchrun_rank() -> int | None:
    """This process's rank when torchrun started it; None otherwise."""
    if all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")):
        return int(os.environ["RANK"])
    return None


def torchrun_world() -> int:
    return int(os.environ["WORLD_SIZE"])
