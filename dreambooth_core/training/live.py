"""Between the chunks of one run: the trainer stays in memory, checkpoints commit in the background.

A chunk's checkpoint is copied to the CPU and then written by a thread while the
next chunk trains, so training waits only for the copy. The commit protocol is
unchanged (files, then the manifest). A chunk that finds the trainer of the
previous chunk at its start step continues from memory: the same state the
checkpoint being written holds, without reading it back. Anything else (a new
process, a cached chunk, another session) waits for pending writes and loads
the latest committed checkpoint.

With several training processes (--gpus N), they keep all of this themselves, for
the whole run; here the run then holds only its worker group (worker_group.py),
which releasing ends (the ranks finish their commits first).

One `LiveTraining` per run and process holds all of this; leaving it (`with`)
waits for the last commit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

from dreambooth_core.session.checkpoints import CheckpointStore, Writer


class LiveTraining:
    def __init__(self) -> None:
        self._kept: tuple[Hashable, int, object] | None = None  # (key, step, trainer)
        self._workers: tuple[Hashable, object] | None = None  # (key, worker group)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.last_save_seconds: float | None = None  # how long the last commit took

    def __enter__(self) -> LiveTraining:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.release()
        if error is None:
            self.wait()
        elif self._thread is not None:
            self._thread.join()  # the commit completes; the run's own error is the one reported

    # -- the trainer kept between chunks ---------------------------------------

    def keep(self, key: Hashable, step: int, trainer: object) -> None:
        self._kept = (key, step, trainer)

    def holds(self, key: Hashable, step: int) -> bool:
        """Whether `take` would hand over a trainer."""
        return self._kept is not None and self._kept[:2] == (key, step)

    def take(self, key: Hashable, step: int):
        """The kept trainer if it belongs to `key` and stands at `step`; it is handed over once."""
        kept, self._kept = self._kept, None
        return kept[2] if kept is not None and kept[:2] == (key, step) else None

    def release(self) -> None:
        self._kept = None
        workers, self._workers = self._workers, None
        if workers is not None:
            workers[1].close()

    def workers(self, key: Hashable, start: Callable[[], object]):
        """The run's training processes for `key` (a WorkerGroup), started by `start()` on first use."""
        if self._workers is not None and self._workers[0] != key:
            self.release()
        if self._workers is None:
            self._workers = (key, start())
        return self._workers[1]

    # -- commits ----------------------------------------------------------------

    def save(self, store: CheckpointStore, step: int, writers: dict[str, Writer], meta: dict) -> None:
        """Commit now, timed: stopping on SIGTERM needs the estimate."""
        self.timed(lambda: store.save(step, writers, meta))

    def timed(self, save: Callable[[], None]) -> None:
        """Run a commit, keeping how long it took."""
        began = time.monotonic()
        save()
        self.last_save_seconds = time.monotonic() - began

    def commit_in_background(self, store: CheckpointStore, step: int, writers: dict[str, Writer],
                             meta: dict) -> None:
        self.wait()

        def commit() -> None:
            try:
                self.save(store, step, writers, meta)
            except BaseException as exc:  # re-raised by wait() in the training thread
                self._error = exc

        self._thread = threading.Thread(target=commit, name=f"checkpoint-{step}")
        self._thread.start()

    def wait(self) -> None:
        """Block until every checkpoint handed to the background is committed (or raise its error)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error
