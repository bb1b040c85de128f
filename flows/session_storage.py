"""What a run holds on its session: the lease that makes it the only writer (and so lets it keep
session.json in memory), and the Prefect result storage beside the sessions."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from prefect import get_run_logger

from dreambooth_core.config import DreamBoothConfig, InputSettings
from dreambooth_core.hashing import digest
from dreambooth_core.session.lease import SessionLease
from dreambooth_core.session.state import kept_in_memory
from dreambooth_core.session.storage import open_named_session


def use_blocks() -> None:
    """Register how a storage block's name opens storage. Imported only for runs that use
    blocks: prefect-gcp and Google's clients take most of a second to import."""
    import blocks.session_storage  # noqa: F401


def result_storage(inputs: InputSettings) -> dict[str, Any]:
    """`with_options` arguments that keep persisted task results with the sessions when they
    live on shared storage, so a cached step is found from another machine."""
    shared = "://" in inputs.storage and not inputs.storage.startswith(("file://", "memory://"))
    if not (inputs.storage_block or shared):
        return {}
    from blocks.session_storage import SessionStorage, load_session_storage

    if inputs.storage_block:
        return {"result_storage": load_session_storage(inputs.storage_block)}
    # Prefect wants result storage saved; this block holds only the URL (credentials come
    # from the machine's environment, as for the sessions themselves).
    block = SessionStorage(url=inputs.storage)
    block.save(f"url-{digest(inputs.storage)}", overwrite=True)
    return {"result_storage": block}


@contextmanager
def session_lease(config: DreamBoothConfig) -> Iterator[SessionLease]:
    """Hold the session's lease (renewed in the background) for the body of the block."""
    log, inputs = get_run_logger(), config.inputs
    if inputs.storage_block:
        use_blocks()
    session = open_named_session(inputs.storage, inputs.storage_block, config.session)
    try:
        session.check_writable()  # a StorageError naming the storage, not the lease's OSError
        with SessionLease(session, wait=config.runtime.lease_wait, log=log) as lease, kept_in_memory(session):
            log.info("Holding the lease on session %s", config.session)
            yield lease
    finally:
        session.forget_checks()  # the next run in this process checks again
