"""Subject masks of prepared images, for --masked-loss: white (1) on the subject, black (0) elsewhere.

A mask is stored as an 8-bit grey PNG of its prepared image's size. One from the user ('shrk (1).mask.png'
beside 'shrk (1).jpg', the photo's size) is cropped and resized exactly as its photo was; one found by a
segmentation model is its probability of the subject at each pixel.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from dreambooth_core.errors import DatasetError
from dreambooth_core.photos.crop import encode_png, open_photo

SUBJECT_FROM = 0.5     # a pixel is the subject's where the mask is at least this
NO_SUBJECT_BELOW = 0.01  # a mask with less of the image on the subject found none


def mask_from_file(name: str, data: bytes, photo_size: tuple[int, int],
                   crop_box: tuple[int, int, int, int],
                   size: tuple[int, int]) -> bytes:
    """The user's mask of a photo of upright `photo_size`, cropped to `crop_box` and resized to `size`."""
    image = ImageOps.exif_transpose(open_photo(name, data)).convert("L")
    if image.size != photo_size:
        raise DatasetError(f"{name}: the mask is {image.size[0]}x{image.size[1]} pixels but its photo is "
                           f"{photo_size[0]}x{photo_size[1]}; save the mask at the photo's size "
                           "(white on the subject, black elsewhere), or delete it to have the "
                           "subject found automatically.")
    return encode_png(image.crop(crop_box).resize(size, Image.Resampling.BILINEAR))


def mask_from_probabilities(probabilities: np.ndarray) -> bytes:
    return encode_png(Image.fromarray((np.clip(probabilities, 0, 1) * 255).round().astype(np.uint8),
                                      "L"))


def mask_values(png: bytes) -> np.ndarray:
    """[height, width] in [0, 1]."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32) / 255.0


def subject_share(png: bytes) -> float:
    """The share of the image the mask calls the subject."""
    return float((mask_values(png) >= SUBJECT_FROM).mean())


def masked_preview(image_png: bytes, mask_png: bytes) -> bytes:
    """The prepared image with its background darkened, to check a mask at a glance (the mask sheet)."""
    image = np.asarray(Image.open(io.BytesIO(image_png)).convert("RGB"), dtype=np.float32)
    weight = 0.25 + 0.75 * mask_values(mask_png)[..., None]
    return encode_png(Image.fromarray((image * weight).round().astype(np.uint8)))
