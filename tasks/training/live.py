"""Between the chunks of one run: the trainer stays in memory, checkpoints commit in the background.

A chunk's checkpoint is copied to the CPU and then written by a thread while the
next chunk trains, so training waits only for the copy. The commit protocol is
unchanged (files, then the manifest). A chunk that finds the trainer of the
previous chunk at its start step continues from memory: the same state the
checkpoint being written holds, without reading it back. Anything else (a new
process, a cached chunk, another session) waits for pending writes and loads
the latest committed checkpoint.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from tasks.training.checkpoint import CheckpointStore


@dataclass
class _Live:
    key: tuple
    step: int
    trainer: object


class _Commits:
    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, store: CheckpointStore, step: int, writers: dict, meta: dict) -> None:
        self.wait()

        def commit():
            try:
                store.save(step, writers, meta)
            except BaseException as exc:  # re-raised by wait() in the training thread
                self._error = exc

        self._thread = threading.Thread(target=commit, name=f"checkpoint-{step}")
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error


_commits = _Commits()
_live: _Live | None = None


def commit_in_background(store: CheckpointStore, step: int, writers: dict, meta: dict) -> None:
    _commits.start(store, step, writers, meta)


def wait_for_commits() -> None:
    """Block until every checkpoint handed to the background is committed (or raise its error)."""
    _commits.wait()


def keep(key: tuple, step: int, trainer: object) -> None:
    global _live
    _live = _Live(key, step, trainer)


def take(key: tuple, step: int):
    """The kept trainer if it belongs to `key` and stands at `step`; it is handed over once."""
    global _live
    live, _live = _live, None
    return live.trainer if live is not None and live.key == key and live.step == step else None


def release() -> None:
    global _live
    _live = None
