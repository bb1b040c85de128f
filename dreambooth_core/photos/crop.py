"""One photo in, one square training image out: decode, find the face, crop around it, resize.

Kept free of the session and of pydantic so that worker processes import it fast.

Two ways to the same picture:
- `prepare_image` is the plain reference: a decoded, upright image is cropped and
  resized with LANCZOS.
- `prepare_photo` is what the dataset step uses. For a JPEG it asks libjpeg for a
  reduced decode (draft mode: DCT scaling by 1/2, 1/4 or 1/8) that still leaves the
  square crop at least DRAFT_MARGIN x the resolution, finds the face on that small
  copy, and resizes from it. EXIF orientation is not applied to the big picture:
  the crop box is computed in the upright photo's pixels (what the manifest
  records), mapped back to the stored (sensor) orientation, resized there, and only
  the small result is turned upright. The output matches `prepare_image` to about
  one grey level on average (tests/photos/test_prepare_faces.py).
"""

from __future__ import annotations

import io
import math
import warnings
from typing import NamedTuple

from PIL import Image, ImageOps, UnidentifiedImageError

from dreambooth_core.errors import DatasetError
from dreambooth_core.photos import faces
from dreambooth_core.photos.buckets import Size, box_around, nearest_bucket

Box = tuple[int, int, int, int]
# Bump when the same photo and settings would give a different prepared image:
# prepared images recorded with another version are made again.
PREPARE_VERSION = 2
DRAFT_MARGIN = 1.0  # decode at reduced size only while the crop keeps >= this x resolution
_ORIENTATION = 0x0112
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


class PreparedPhoto(NamedTuple):
    png: bytes
    crop_box: Box          # in the upright photo's pixels
    face_box: Box | None   # the face the crop is centred on, same pixels
    size: Size | None = None  # (width, height) of the image when it is a bucket's; None: square


def unreadable(name: str, exc: BaseException) -> DatasetError:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return DatasetError(f"{name}: too many pixels to be a photo, refused as a possible "
                            f"decompression bomb ({exc}). Replace it with a photo of at most "
                            f"{Image.MAX_IMAGE_PIXELS:,} pixels.")
    return DatasetError(f"{name}: cannot be read as an image ({exc}). Remove it from the "
                        "photos folder or replace it with a valid JPEG or PNG.")


# Only these are ever parsed: no EPS (Ghostscript), PSD or other exotic decoders.
OPENABLE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")


def open_image(data: bytes) -> Image.Image:
    """Open (header only) an accepted format, with decompression bombs raised as errors.

    Raises Image.DecompressionBombError, UnidentifiedImageError."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data), formats=OPENABLE_FORMATS)
        except Image.DecompressionBombWarning as exc:
            raise Image.DecompressionBombError(str(exc)) from None


def open_photo(name: str, data: bytes) -> Image.Image:
    """open_image, with failures as the user's DatasetError naming the file."""
    try:
        return open_image(data)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise unreadable(name, exc) from exc


def load_photo(name: str, data: bytes) -> Image.Image:
    """Decode fully, apply EXIF orientation, convert to RGB."""
    image = open_photo(name, data)
    try:
        image.load()
    except (OSError, ValueError) as exc:
        raise unreadable(name, exc) from exc
    return ImageOps.exif_transpose(image).convert("RGB")


def square_around(size: tuple[int, int], face: Box | None) -> Box:
    """The largest square in `size`, centred on `face` as far as the edges allow (else centred)."""
    return box_around(size, face, (1, 1))


def centre_square(image: Image.Image) -> Box:
    return square_around(image.size, None)


def encode_png(image: Image.Image) -> bytes:
    """Lossless, so the level changes only speed and size: level 1 encodes a 512-px photo
    ~5x faster than the default 6 for ~15 % more bytes."""
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def prepare_image(image: Image.Image, resolution: int) -> tuple[bytes, Box]:
    """The plain reference: crop an upright RGB image around its largest face, LANCZOS-resize."""
    found = faces.find_faces(image)
    box = square_around(image.size, found[0] if found else None)
    square = image.crop(box).resize((resolution, resolution), Image.Resampling.LANCZOS)
    return encode_png(square), box


def upright_size(name: str, data: bytes) -> tuple[int, int]:
    """(width, height) of the photo turned upright by its EXIF orientation; only the header is read."""
    image = open_photo(name, data)
    try:
        orientation = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # as prepare_photo: a broken EXIF block counts as upright
        orientation = 1
    width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def prepare_photo(name: str, data: bytes, resolution: int, box: Box | None = None,
                  buckets: list[Size] | None = None, size: Size | None = None) -> PreparedPhoto:
    """The fast path: reduced JPEG decode, crop box in upright pixels, resize, turn upright.

    `box`: crop there (upright pixels, as a manifest records it) instead of around the face
    found; the same photo and box give the same image. `buckets`: the image takes the size of the
    bucket nearest the photo's aspect ratio (buckets.py), cropped to it around the face; `size`:
    that size, already chosen (with `box`). Otherwise it is a `resolution` square."""
    image = open_photo(name, data)
    try:
        orientation = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # a broken EXIF block is not worth refusing a photo for
        orientation = 1
    turn = _UPRIGHT.get(orientation)
    raw_width, raw_height = image.size
    upright_size = (raw_height, raw_width) if orientation in (5, 6, 7, 8) else (raw_width, raw_height)
    if size is None and buckets:
        size = nearest_bucket(upright_size, buckets)
    target = size or (resolution, resolution)
    scale = 1.0  # raw pixels per decoded pixel
    try:
        # enough pixels for the crop and for the face detector's own copy
        wanted = max(max(target) * DRAFT_MARGIN, faces.DETECT_SIDE) / min(raw_width, raw_height)
        if image.format == "JPEG" and wanted < 0.5:
            drafted = image.draft("RGB",
                                  (math.ceil(raw_width * wanted), math.ceil(raw_height * wanted)))
            if drafted is not None:
                scale = raw_width / drafted[1][2]
        image.load()
        pixels = image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise unreadable(name, exc) from exc
    face = None
    if box is None:
        found = faces.find_faces(pixels.transpose(turn) if turn is not None else pixels)
        face = tuple(round(v * scale) for v in found[0]) if found else None
        box = box_around(upright_size, face, target)
    raw_box = _to_raw(box, orientation, raw_width, raw_height)
    # the resize is in the stored orientation: a quarter turn swaps the target's sides
    stored_target = target[::-1] if orientation in (5, 6, 7, 8) else target
    resized = pixels.resize(stored_target, Image.Resampling.LANCZOS,
                            box=tuple(v / scale for v in raw_box), reducing_gap=3.0)
    if turn is not None:
        resized = resized.transpose(turn)
    return PreparedPhoto(encode_png(resized), box, face, size)


def _to_raw(box: Box, orientation: int, width: int, height: int) -> Box:
    """Map a box in the upright photo to the stored photo (`width` x `height`, before EXIF)."""
    def point(x: int, y: int) -> tuple[int, int]:
        return {1: (x, y), 2: (width - x, y), 3: (width - x, height - y), 4: (x, height - y),
                5: (y, x), 6: (y, height - x), 7: (width - y, height - x), 8: (width - y, x)
                }.get(orientation, (x, y))
    (x0, y0), (x1, y1) = point(box[0], box[1]), point(box[2], box[3])
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def prepare_or_error(name: str, data: bytes, resolution: int,
                     buckets: list[Size] | None = None) -> PreparedPhoto | DatasetError:
    """prepare_photo for a worker process: the error is returned, to be reported with the others."""
    try:
        return prepare_photo(name, data, resolution, buckets=buckets)
    except DatasetError as exc:
        return exc
