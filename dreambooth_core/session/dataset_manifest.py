"""dataset/manifest.json: the prepared training images, then their tokens and captions.

The dataset step writes it with one item per photo (source hash, crop and face box);
the captions step adds each item's token and caption and each subject's prompts.
`load_dataset_manifest` and `save_dataset_manifest` are its only reader and writer.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from dreambooth_core.errors import SessionError
from dreambooth_core.hashing import digest
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import DATASET_MANIFEST


class DatasetItem(BaseModel):
    model_config = ConfigDict(frozen=True)
    # What the dataset step records; the manifest's digest covers exactly these.
    PREPARED: ClassVar[set[str]] = {"file", "source", "source_sha256", "crop_box", "face_box"}

    file: str = Field(description="The prepared image, in the session.")
    source: str = Field(description="The original photo, in the session (photos/...).")
    source_sha256: str
    crop_box: list[int] = Field(description="The crop (square unless in a bucket), in the upright "
                                            "photo's pixels.")
    face_box: list[int] | None = Field(None, description="The face the crop is centred on.")
    # Not in PREPARED: recording it (sessions prepared before it existed get it on their next
    # run) leaves the dataset digest, and so the training fingerprint, as it was.
    sha256: str | None = Field(None, description="Of the prepared image: one that no longer matches "
                               "is made again from its photo.")
    # Not in PREPARED either: the manifest's method names the buckets, and the crop box their shape.
    size: list[int] | None = Field(None, description="(width, height) of an aspect-ratio bucket's image; "
                                   "None: a square at the manifest's resolution.")
    token: str | None = Field(None, description="The subject's identifier (captions step).")
    caption: str | None = Field(None, description="What training pairs the image with (captions step).")
    caption_file: str | None = Field(None, description="The caption file it was read from, if any.")
    caption_origin: str | None = Field(None, description="Where the caption came from: 'rule' (the "
                                       "instance prompt), 'hand-written' (a .txt beside the photo) or "
                                       "'captioner' (--captions auto; perhaps edited since).")


class SubjectRecord(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)
    class_word: str | None
    instance_prompt: str
    class_prompt: str | None
    photos: int
    sources: list[str] = Field(alias="from", description="The file and folder names the token came from.")


class DatasetManifest(BaseModel):
    model_config = ConfigDict(frozen=True)
    resolution: int
    photos_digest: str
    method: str = Field(description="How the images were prepared (version and face detector).")
    items: list[DatasetItem]
    digest: str = Field(description="Of everything above: changes when any prepared image does.")
    subjects: dict[str, SubjectRecord] = Field(default_factory=dict, description="Token -> prompts "
                                               "(captions step).")

    @staticmethod
    def prepared_digest(resolution: int, photos_digest: str, method: str, items: list[DatasetItem]) -> str:
        return digest({"resolution": resolution, "photos_digest": photos_digest, "method": method,
                       "items": [item.model_dump(include=DatasetItem.PREPARED) for item in items]})

    @property
    def tokens(self) -> list[str]:
        return sorted({item.token or "" for item in self.items})


def load_dataset_manifest(session: Session) -> DatasetManifest | None:
    if not session.exists(DATASET_MANIFEST):
        return None
    try:
        return DatasetManifest.model_validate(session.read_json(DATASET_MANIFEST))
    except ValueError as exc:
        raise SessionError(f"{session.url}/{DATASET_MANIFEST} is damaged ({exc}). Delete the "
                           "session's dataset/ folder to prepare the photos again.") from None


def save_dataset_manifest(session: Session, manifest: DatasetManifest) -> None:
    session.write_json(DATASET_MANIFEST, manifest.model_dump(mode="json", by_alias=True))


def require_dataset_manifest(session: Session) -> DatasetManifest:
    manifest = load_dataset_manifest(session)
    if manifest is None:
        raise SessionError(f"session {session.name!r} has no prepared photos ({DATASET_MANIFEST}). "
                           "Run dreambooth train with --photos to prepare them.")
    return manifest
