"""`dreambooth upload`: put photos into a session and tell Prefect, whose trigger starts training.

The event `dreambooth.photos.uploaded` names the session as its resource and
carries the session's configuration; a deployment in prefect.yaml whose
trigger matches the event's `dreambooth.deployment` label runs the training
flow with that configuration (the photos are then the session's own copies).
"""

from __future__ import annotations

from pathlib import Path

from dreambooth_core.config import DreamBoothConfig
from dreambooth_core.photos.originals import import_photos
from dreambooth_core.session.state import open_or_create
from dreambooth_core.session.storage import open_named_session

UPLOADED = "dreambooth.photos.uploaded"


def shared_storage(storage: str) -> str:
    """A local folder as an absolute path: the worker that trains runs in another directory."""
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def upload_photos(config: DreamBoothConfig) -> tuple[DreamBoothConfig, int]:
    """Create or open the session, copy the photos in; returns the configuration a triggered
    run should use (the session's photos, storage as the worker sees it) and the photo count."""
    inputs = config.inputs.model_copy(update={"storage": shared_storage(config.inputs.storage)})
    config = config.model_copy(update={"inputs": inputs})
    session = open_named_session(inputs.storage, inputs.storage_block, config.session)
    open_or_create(session, config)
    photos = import_photos(session, inputs.photos)
    return config.model_copy(update={"inputs": inputs.model_copy(update={"photos": None})}), len(photos.photos)


def emit_uploaded(config: DreamBoothConfig, deployment: str) -> str | None:
    """Send the event to the Prefect server; returns its id, or None when no server is set."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return None
    event = emit_event(
        event=UPLOADED,
        resource={"prefect.resource.id": f"dreambooth.session.{config.session}",
                  "prefect.resource.name": config.session,
                  "dreambooth.storage": config.inputs.storage,
                  "dreambooth.deployment": deployment},
        payload={"config": config.model_dump(mode="json")},
    )
    EventsWorker.drain_all()  # the process may end right after: send it now
    return str(event.id) if event else None
