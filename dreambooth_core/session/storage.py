"""Finding a session: on a storage URL, or on the storage a named block holds.

Blocks (URL plus credentials kept in Prefect) belong to the edge of the pipeline;
this package never imports Prefect. The edge registers how a block name becomes a
storage (`use_block_storage`), and the registration travels with the function it
names, so a spawned training process can register it again.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from pydantic import BaseModel, ConfigDict

from dreambooth_core.errors import ConfigError
from dreambooth_core.session.folder import Session


class BlockStorage(Protocol):
    url: str

    def storage_options(self) -> dict[str, Any]: ...


BlockLoader = Callable[[str], BlockStorage]
_block_loader: BlockLoader | None = None


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


def open_named_session(storage: str, storage_block: str | None, name: str) -> Session:
    """A session on a storage URL, or on the storage a block names."""
    url, options = storage_location(storage, storage_block)
    return Session(url, name, options)


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
