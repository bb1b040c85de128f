"""Square, resized training images made from the session's photos."""

from __future__ import annotations

import hashlib
import io
import logging

from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict

from tasks.config import digest
from tasks.dataset.photos import PHOTOS, import_photos, is_image, photos_digest
from tasks.errors import DatasetError
from tasks.session import Session

DATASET = "dataset"
MANIFEST = f"{DATASET}/manifest.json"


class PreparedDataset(BaseModel):
    """What the dataset step produced: small enough to pass between tasks."""

    model_config = ConfigDict(frozen=True)
    count: int
    resolution: int
    digest: str


def load_photo(name: str, data: bytes) -> Image.Image:
    """Decode, apply EXIF orientation, convert to RGB."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{name}: cannot be read as an image ({exc}). Remove it from the "
                           "photos folder or replace it with a valid JPEG or PNG.") from exc
    return ImageOps.exif_transpose(image).convert("RGB")


def centre_square(image: Image.Image) -> tuple[int, int, int, int]:
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def prepare_image(image: Image.Image, resolution: int) -> tuple[bytes, tuple[int, int, int, int]]:
    box = centre_square(image)
    square = image.crop(box).resize((resolution, resolution), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    square.save(out, format="PNG")
    return out.getvalue(), box


def prepare_dataset(session: Session, names: list[str], resolution: int,
                    log: logging.Logger | None = None) -> list[dict]:
    """Write dataset/NNNN.png for every session photo; return manifest items.

    Every unreadable photo is collected and reported at once."""
    log = log or logging.getLogger("dreambooth")
    items, problems = [], []
    for index, name in enumerate(sorted(names), start=1):
        data = session.read_bytes(f"{PHOTOS}/{name}")
        try:
            image = load_photo(name, data)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        png, box = prepare_image(image, resolution)
        file = f"{DATASET}/{index:04d}.png"
        session.write_bytes(file, png)
        items.append({"file": file, "source": f"{PHOTOS}/{name}", "crop_box": list(box),
                      "source_sha256": hashlib.sha256(data).hexdigest()})
    if problems:
        raise DatasetError("some photos cannot be used:\n  " + "\n  ".join(problems))
    log.info("Prepared %d photos at %dx%d", len(items), resolution, resolution)
    return items


def build_dataset(session: Session, photos_folder, resolution: int,
                  log: logging.Logger | None = None) -> PreparedDataset:
    """Import the photos (first run only) and prepare them, unless already prepared."""
    log = log or logging.getLogger("dreambooth")
    photos = import_photos(session, photos_folder)
    source = photos_digest(photos)
    if session.exists(MANIFEST):
        manifest = session.read_json(MANIFEST)
        if manifest["photos_digest"] == source and manifest["resolution"] == resolution:
            log.info("Dataset already prepared (%d photos)", len(manifest["items"]))
            return _summary(manifest)
    items = prepare_dataset(session, [n for n in photos if is_image(n)], resolution, log)
    manifest = {"resolution": resolution, "photos_digest": source, "items": items}
    manifest["digest"] = digest(manifest)
    session.write_json(MANIFEST, manifest)
    return _summary(manifest)


def _summary(manifest: dict) -> PreparedDataset:
    return PreparedDataset(count=len(manifest["items"]), resolution=manifest["resolution"],
                           digest=manifest["digest"])
