"""Finding a session: on a storage URL, or on the storage a named block holds.

A session is opened here, once per process: opening one lists its storage (round trips on an
object store), so every later `open_named_session` or `SessionRef.open()` of the same session in
the process returns the Session opened first. A SessionRef crosses task and process boundaries
as plain data; the process at the other end opens the session once for itself.

Blocks (URL plus credentials kept in Prefect) belong to the edge of the pipeline;
this package never imports Prefect. The edge registers how a block name becomes a
storage (`use_block_storage`), and the registration travels with the function it
names, so a spawned training process can register it again.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any, Callable, Protocol

from pydantic import BaseModel, ConfigDict

from dreambooth_core.errors import ConfigError
from dreambooth_core.session.folder import Session


class BlockStorage(Protocol):
    url: str

    def storage_options(self) -> dict[str, Any]: ...


BlockLoader = Callable[[str], BlockStorage]
_block_loader: BlockLoader | None = None
# (process id, storage or block, session name) -> the session, the most recently used last. A long-lived
# process (a worker, a server's task runner) keeps only the last OPENED_KEPT it used.
_opened: OrderedDict[tuple, Session] = OrderedDict()
OPENED_KEPT = 64
_opening = threading.Lock()


def use_block_storage(loader: BlockLoader | None) -> None:
    """How a storage block's name becomes the storage it holds (blocks.session_storage)."""
    global _block_loader
    _block_loader = loader


def block_storage_loader() -> BlockLoader | None:
    return _block_loader


def storage_location(storage: str, storage_block: str | None) -> tuple[str, dict[str, Any]]:
    """(URL, fsspec options) of the sessions' storage: `storage`, or what the block holds."""
    if not storage_block:
        return storage, {}
    if _block_loader is None:
        raise ConfigError(f"--storage-block {storage_block!r} needs the Prefect blocks of this "
                          "project: run through the dreambooth command or the Prefect flow, or "
                          "pass --storage with the storage's URL.")
    # Credentials are read from Prefect's block store here, in the process that uses them.
    block = _block_loader(storage_block)
    return block.url, block.storage_options()


def process_local(storage: str) -> bool:
    """Whether sessions in `storage` live in this process's memory only (fsspec's memory://)."""
    return storage.startswith("memory:")


def open_named_session(storage: str, storage_block: str | None, name: str) -> Session:
    """The session `name` on a storage URL, or on the storage a block names: the one way to open
    a session, opened once per process (a fork opens it again: its filesystem may hold sockets)."""
    local = "://" not in storage
    where = f"block:{storage_block}" if storage_block else os.path.abspath(storage) if local else storage
    key = (os.getpid(), where, name)
    with _opening:  # tasks run in threads: the first of them opens it
        if key not in _opened:
            url, options = storage_location(storage, storage_block)
            _forget_unused(os.getpid())
            _opened[key] = Session(url, name, options)
        _opened.move_to_end(key)
        return _opened[key]


def _forget_unused(pid: int) -> None:
    """Drop what a parent process opened (a fork inherits it, unused) and the least recently used
    beyond OPENED_KEPT."""
    for key in [k for k in _opened if k[0] != pid]:
        del _opened[key]
    while len(_opened) >= OPENED_KEPT:
        _opened.popitem(last=False)


class SessionRef(BaseModel):
    """How tasks find a session. `uid` changes if a session is deleted and recreated,
    so cached results of the old one never stand in for the new one."""

    model_config = ConfigDict(frozen=True)
    storage: str
    name: str
    uid: str
    storage_block: str | None = None  # a block's name, never its credentials

    def open(self) -> Session:
        return open_named_session(self.storage, self.storage_block, self.name)
