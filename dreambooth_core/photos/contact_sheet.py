"""A contact sheet: every prepared image as a small thumbnail on one grid, to check crops at a glance."""

from __future__ import annotations

import io
import math

from PIL import Image

THUMBNAIL = 128
MAX_COLUMNS = 8
GAP = 4


def contact_sheet(images: list[bytes], thumbnail: int = THUMBNAIL, fmt: str = "PNG") -> bytes:
    """A grid (at most MAX_COLUMNS wide) of `thumbnail`-pixel copies of encoded images (the longer side)."""
    columns = max(1, min(MAX_COLUMNS, math.ceil(math.sqrt(len(images)))))
    rows = max(1, math.ceil(len(images) / columns))
    step = thumbnail + GAP
    sheet = Image.new("RGB", (columns * step + GAP, rows * step + GAP), (255, 255, 255))
    for index, data in enumerate(images):
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size  # a bucket's image keeps its shape inside the square
            shape = (thumbnail, max(1, round(thumbnail * height / width))) if width >= height else \
                (max(1, round(thumbnail * width / height)), thumbnail)
            small = image.convert("RGB").resize(shape, Image.Resampling.LANCZOS)
        row, column = divmod(index, columns)
        sheet.paste(small, (GAP + column * step + (thumbnail - shape[0]) // 2,
                            GAP + row * step + (thumbnail - shape[1]) // 2))
    out = io.BytesIO()
    sheet.save(out, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return out.getvalue()

