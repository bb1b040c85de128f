"""Sessions for tests of the plain library: opened as a run opens them, photos imported and prepared."""

from __future__ import annotations

from pathlib import Path

from dreambooth_core.config import DreamBoothConfig
from dreambooth_core.photos.originals import import_photos
from dreambooth_core.photos.prepare import PreparedDataset, build_dataset
from dreambooth_core.session.folder import Session
from dreambooth_core.session.state import open_or_create


def opened_session(storage: str | Path, name: str = "s", **settings) -> Session:
    """A session with its session.json, as the flow's first step leaves it."""
    session = Session(str(storage), name)
    open_or_create(session, DreamBoothConfig(session=name, **settings))
    return session


def prepare_folder(session: Session, photos: str | Path | None, resolution: int, **options) -> PreparedDataset:
    """Import `photos` into the session (or keep its own) and prepare them, as a run does."""
    return build_dataset(session, import_photos(session, photos), resolution, **options)
