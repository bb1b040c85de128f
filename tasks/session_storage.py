"""The session storage a config names (a URL, or a block with credentials), the
Prefect result storage beside it, and the lease that makes a run its only writer."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from prefect import get_run_logger

from tasks.config import DreamBoothConfig, digest
from tasks.session import Session
from tasks.session_state import open_named_session
from tasks.storage.lease import SessionLease


def open_config_session(config: DreamBoothConfig) -> Session:
    return open_named_session(config.storage, config.storage_block, config.session)


def result_storage(config: DreamBoothConfig) -> dict[str, Any]:
    """`with_options` arguments that keep persisted task results with the sessions when they
    live on shared storage, so a cached step is found from another machine."""
    from blocks.session_storage import SessionStorage, load_session_storage

    if config.storage_block:
        return {"result_storage": load_session_storage(config.storage_block)}
    if "://" in config.storage and not config.storage.startswith(("file://", "memory://")):
        # Prefect wants result storage saved; this block holds only the URL (credentials
        # come from the machine's environment, as for the sessions themselves).
        block = SessionStorage(url=config.storage)
        block.save(f"url-{digest(config.storage)}", overwrite=True)
        return {"result_storage": block}
    return {}


@contextmanager
def session_lease(config: DreamBoothConfig) -> Iterator[SessionLease]:
    """Hold the session's lease (renewed in the background) for the body of the block."""
    log = get_run_logger()
    with SessionLease(open_config_session(config), wait=config.lease_wait, log=log) as lease:
        log.info("Holding the lease on session %s", config.session)
        yield lease
