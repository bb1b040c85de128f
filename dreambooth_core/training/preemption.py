"""Stopping training cleanly when the machine is being taken away.

Preemptible cloud GPUs get SIGTERM and, some seconds later, SIGKILL. While
training, `stop_requests()` holds SIGTERM: the handler only records the
request, the loop finishes its current step, commits a checkpoint if one fits
in the grace period, and leaves the context. On leaving, the previous handler
is put back and the signal is delivered to it again, so whatever owned SIGTERM
before still decides how the process ends (under Prefect: the flow run is
marked Crashed, which the resume automation reschedules; with no handler: the
process exits as killed by SIGTERM).

A checkpoint that does not finish in time is harmless: nothing is visible
until its manifest is written, and the previous committed one stays the latest.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass
class StopRequest:
    """Set by the SIGTERM handler; read by the training loop after each step."""

    grace_seconds: float
    received_at: float | None = None
    on_request: Callable[[], object] | None = None  # called once, from the signal handler

    @property
    def requested(self) -> bool:
        return self.received_at is not None

    def remaining(self) -> float:
        """Seconds left of the grace period (the whole period before a request)."""
        if self.received_at is None:
            return self.grace_seconds
        return self.grace_seconds - (time.monotonic() - self.received_at)

    def save_fits(self, estimated_save_seconds: float) -> bool:
        return estimated_save_seconds <= self.remaining()

    def agreed(self, world: int, device) -> bool:
        """Whether any of the `world` training processes was asked to stop; all of them must
        ask together after each step, so they stop at the same one (with several processes: a
        collective and a host-device sync point per step)."""
        if world == 1:
            return self.requested
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1.0 if self.requested else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and self.received_at is None:
            self.received_at = time.monotonic()
        return self.requested


@contextlib.contextmanager
def stop_requests(grace_seconds: float) -> Iterator[StopRequest]:
    """Hold SIGTERM for the duration of the block; re-deliver it on the way out.

    Signal handlers can only be set in the main thread; elsewhere the block runs
    with a request that is never set (SIGTERM keeps its usual effect)."""
    request = StopRequest(grace_seconds)
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def record(signum, frame) -> None:
        if request.received_at is None:
            request.received_at = time.monotonic()
            if request.on_request:
                request.on_request()

    previous = signal.signal(signal.SIGTERM, record)
    try:
        yield request
    finally:
        # None: a handler set outside Python, which cannot be put back; the default stands in.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        if request.requested:
            signal.raise_signal(signal.SIGTERM)  # the previous handler's turn


class TrainingStopped(RuntimeError):
    """SIGTERM stopped training, and the previous handler let the process go on."""


def save_on_stop(live, store, save: Callable[[], None], step: int, stop: StopRequest, log,
                 agree: Callable[[bool], bool] = lambda fits: fits) -> bool:
    """Commit a checkpoint at `step` by `save()` if the last measured save (`live.last_save_seconds`)
    fits in what is left of the grace period (unmeasured: try; a save cut short is never visible).
    `agree`: how the processes that save together agree on it. Returns whether it did."""
    estimate = live.last_save_seconds or 0.0
    if not agree(stop.save_fits(estimate)):
        log.warning("SIGTERM: stopping at step %d without a checkpoint (saving takes ~%.0f s, "
                    "%.0f s of the grace period left); the next run resumes from step %d",
                    step, estimate, max(stop.remaining(), 0), store.latest_step())
        return False
    log.warning("SIGTERM: stopping at step %d; committing a checkpoint first (%.0f s of the "
                "grace period left)", step, stop.remaining())
    live.timed(save)
    return True
