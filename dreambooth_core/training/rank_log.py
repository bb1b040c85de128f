"""The log of a training process beside the pipeline's own: lines on stderr, marked with the rank."""

from __future__ import annotations

import logging


def rank_log(rank: int) -> logging.Logger:
    """(The pipeline's Prefect logger does not reach another process.)"""
    log = logging.getLogger(f"dreambooth.rank{rank}")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"rank {rank} | %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log
