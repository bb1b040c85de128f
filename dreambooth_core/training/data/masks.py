"""The subject mask of every prepared photo, for --masked-loss (masks/manifest.json in the session).

A photo with a mask file beside it ('shrk (1).mask.png') takes that, cropped as the photo was; the
others are segmented by CLIPSeg prompted with their subject's class word ('person' without one, as the
photo checks take a subject without a class word for a person). Each mask is named after what made it
(the prepared image, and the mask file or the segmenter and prompt), so a rerun makes none again and
the segmenter is not even loaded. A photo whose mask finds no subject is warned about: its loss is then
the background's floor weight everywhere, which trains it like an unmasked photo at a lower rate.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable

import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict

from dreambooth_core.errors import SessionError
from dreambooth_core.hashing import digest
from dreambooth_core.model.segmentation import Segmenter
from dreambooth_core.photos.contact_sheet import contact_sheet
from dreambooth_core.photos.crop import upright_size
from dreambooth_core.photos.masks import (
    NO_SUBJECT_BELOW,
    mask_from_file,
    mask_from_probabilities,
    mask_values,
    masked_preview,
    subject_share,
)
from dreambooth_core.photos.originals import mask_name
from dreambooth_core.session.dataset_manifest import DatasetItem, DatasetManifest, require_dataset_manifest
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import CONTACT_SHEET, MASK_MANIFEST, MASKS

DEFAULT_PROMPT = "person"


class SubjectMask(BaseModel):
    model_config = ConfigDict(frozen=True)
    file: str            # in the session
    source: str          # the user's mask file, or "<segmenter>: <prompt>"
    subject_share: float  # of the image


class MaskManifest(BaseModel):
    model_config = ConfigDict(frozen=True)
    masks: dict[str, SubjectMask]  # by prepared image (DatasetItem.file)
    digest: str

    @property
    def without_subject(self) -> list[str]:
        return [image for image, mask in self.masks.items() if mask.subject_share < NO_SUBJECT_BELOW]


def build_masks(session: Session, segmenter_name: str, segmenter: Callable[[], Segmenter],
                log: logging.Logger | None = None) -> MaskManifest:
    """Masks of every prepared photo; `segmenter` (named `segmenter_name`, what the masks are keyed by) is
    called, once, only when a photo must be segmented."""
    log = log or logging.getLogger("dreambooth")
    dataset = require_dataset_manifest(session)
    loaded: list[Segmenter] = []

    def segment() -> Segmenter:
        if not loaded:
            loaded.append(segmenter())
        return loaded[0]

    masks = {item.file: _mask(session, dataset, item, segmenter_name, segment) for item in dataset.items}
    manifest = MaskManifest(masks=masks,
                            digest=digest([[k, v.file, v.source] for k, v in sorted(masks.items())]))
    session.write_json(MASK_MANIFEST, manifest.model_dump(mode="json"))
    session.write_bytes(CONTACT_SHEET, contact_sheet([masked_preview(session.read_bytes(i.file),
                                                                   session.read_bytes(masks[i.file].file))
                                                   for i in dataset.items]))
    sources = {item.file: item.source for item in dataset.items}
    for image in manifest.without_subject:
        log.warning("%s: no subject found in its mask (%s), so --masked-loss weighs all of it as "
                    "background. Check the photo shows the subject, or put a mask file beside it (%s: "
                    "white on the subject)",
                    sources[image], masks[image].source, mask_name(sources[image]).split("/")[-1])
    log.info("Subject masks of %d photos (%d from mask files), drawn on %s", len(masks),
             sum(not m.source.startswith("segmenter") for m in masks.values()), CONTACT_SHEET)
    return manifest


def _mask(session: Session, dataset: DatasetManifest, item: DatasetItem, segmenter_name: str,
          segment: Callable[[], Segmenter]) -> SubjectMask:
    own = mask_name(item.source)
    image_key = item.sha256 or item.file
    if session.exists(own):
        data = session.read_bytes(own)
        key, source = digest(["file", image_key, hashlib.sha256(data).hexdigest()]), own
    else:
        words = dataset.subjects.get(item.token or "")
        prompt = (words.class_word if words else None) or DEFAULT_PROMPT
        key = digest(["segmenter", segmenter_name, image_key, prompt])
        source = f"segmenter {segmenter_name}: {prompt}"
    file = f"{MASKS}/{key[:20]}.png"
    if not session.exists(file):
        image = session.read_bytes(item.file)
        size = Image.open(io.BytesIO(image)).size
        if source == own:
            photo = upright_size(item.source, session.read_bytes(item.source))
            png = mask_from_file(own, data, photo, tuple(item.crop_box), size)
        else:
            png = mask_from_probabilities(segment().probabilities(Image.open(io.BytesIO(image)), prompt))
        session.write_bytes(file, png)
    return SubjectMask(file=file, source=source, subject_share=subject_share(session.read_bytes(file)))


def load_mask_manifest(session: Session) -> MaskManifest:
    if not session.exists(MASK_MANIFEST):
        raise SessionError(f"session {session.name!r} has no subject masks ({MASK_MANIFEST}) although "
                           "--masked-loss is on. Run dreambooth train again to make them.")
    try:
        return MaskManifest.model_validate(session.read_json(MASK_MANIFEST))
    except ValueError as exc:
        raise SessionError(f"{session.url}/{MASK_MANIFEST} is damaged ({exc}). Delete the session's "
                           f"{MASKS}/ folder to make the masks again.") from None


def mask_tensor(session: Session, manifest: MaskManifest, image: str) -> torch.Tensor:
    """[1, 1, H, W] in [0, 1]: the mask of the prepared image `image`."""
    return torch.from_numpy(mask_values(session.read_bytes(manifest.masks[image].file)))[None, None]
