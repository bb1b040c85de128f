"""The class images a session trains with (class_images/manifest.json) and the shared
store beside the sessions that holds them.

Class images depend only on the base model and the generation settings, never on
a session's photos, so one store per storage location lets every session that
uses the same model and class prompt reuse them (on gs:// as on a local folder).
The store is opened like a session folder, which gives it the same atomic writes
and the same check that every path stays inside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, ConfigDict

from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import CLASS_MANIFEST, CLASS_STORE


class ClassImageSet(BaseModel):
    model_config = ConfigDict(frozen=True)
    subject: str
    prompt: str  # the caption training pairs with these images
    source: Literal["generated", "folder"]
    files: list[str]  # paths inside the class-image store
    size: list[int] | None = None  # (width, height) of the aspect-ratio bucket they are for; None: squares

    def recorded(self) -> dict:
        """What the manifest's digest covers: a set of squares as before buckets existed."""
        return self.model_dump(exclude={"size"} if self.size is None else set())


class ClassImages(BaseModel):
    """What training reads: open the store with open_class_store(storage)."""

    model_config = ConfigDict(frozen=True)
    storage: str
    resolution: int
    sets: list[ClassImageSet]
    digest: str  # changes when any set's files change (their names name what made them)
    generated: int = 0  # images made by this call


def open_class_store(storage: str | Session) -> Session:
    """The shared class-image folder of a storage (a URL, or any session on it)."""
    if isinstance(storage, Session):
        return storage.sibling(CLASS_STORE)
    return Session.shared_folder(storage, CLASS_STORE)


def save_class_manifest(session: Session, manifest: ClassImages) -> None:
    session.write_json(CLASS_MANIFEST, manifest.model_dump(exclude={"generated"}))


def read_class_images(manifest: ClassImages, beside: Session | None = None
                      ) -> Iterator[tuple[ClassImageSet, bytes]]:
    """(set, PNG bytes) of every class image, set by set."""
    store = open_class_store(beside or manifest.storage)
    for image_set in manifest.sets:
        for file in image_set.files:
            yield image_set, store.read_bytes(file)
