"""Aspect-ratio buckets: the training image sizes of about one pixel area, one per aspect ratio.

With --buckets each photo keeps its aspect ratio as far as the nearest bucket allows (a tall
portrait trains at 832x1216 at SDXL's 1024 px area, not cropped to a square). Sides are multiples
of a step of about 1/16 of the resolution (64 px at 1024), itself a multiple of what the model's
denoiser divides (Family.pixel_multiple: 64 px for SD 1.x's UNet, 32 for SDXL's, 16 for FLUX's
packed latents; at least 16), and no bucket is longer than MAX_ASPECT times its width or height,
so a panorama is cropped rather than trained as a strip.
"""

from __future__ import annotations

import math
from collections import Counter

Size = tuple[int, int]  # (width, height) in pixels
MAX_ASPECT = 2.0
MIN_STEP = 16
BUCKETS_VERSION = 1  # bump when the same resolution would give other buckets


def bucket_step(resolution: int, pixel_multiple: int) -> int:
    """The step of the bucket sides: the multiple of `pixel_multiple` nearest resolution / 16."""
    multiple = max(MIN_STEP, pixel_multiple)
    return multiple * max(1, round(resolution / 16 / multiple))


def bucket_grid(resolution: int, step: int) -> list[Size]:
    """Every bucket of `resolution`'s pixel area (resolution x resolution at most), with sides in
    multiples of `step`, narrowest first."""
    area = resolution * resolution
    sizes = set()
    # the tall ones and the square; the wide ones mirror them
    for width in range(step, resolution + 1, step):
        height = area // width // step * step
        if height / width <= MAX_ASPECT:
            sizes |= {(width, height), (height, width)}
    return sorted(sizes)


def nearest_bucket(size: Size, grid: list[Size]) -> Size:
    """The bucket whose aspect ratio is closest to `size`'s (on a log scale: 2:1 is as far from 1:1 as
    1:2); of two as close, the larger."""
    aspect = math.log(size[0] / size[1])
    return min(grid, key=lambda b: (round(abs(math.log(b[0] / b[1]) - aspect), 9), -b[0] * b[1]))


def box_around(size: Size, face: tuple[int, int, int, int] | None,
               shape: Size) -> tuple[int, int, int, int]:
    """The largest box of `shape`'s aspect ratio in an image of `size`, centred on `face` as far as
    the edges allow (else centred). A square `shape` gives crop.square_around's box."""
    width, height = size
    if width * shape[1] > height * shape[0]:  # the photo is wider than the shape: the full height
        box_width, box_height = min(width, round(height * shape[0] / shape[1])), height
    else:
        box_width, box_height = width, min(height, round(width * shape[1] / shape[0]))
    if face is None:
        left, top = (width - box_width) // 2, (height - box_height) // 2
    else:
        centre_x, centre_y = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
        left = min(max(0, math.floor(centre_x - box_width / 2 + 0.5)), width - box_width)
        top = min(max(0, math.floor(centre_y - box_height / 2 + 0.5)), height - box_height)
    return left, top, left + box_width, top + box_height


def bucket_lines(sizes: list[Size]) -> tuple[list[str], list[str]]:
    """(one line per bucket with its photo count, a warning per bucket that holds one photo)."""
    counts = Counter(sizes)
    lines = [f"{w}x{h}: {n} photo{'s' * (n != 1)}" for (w, h), n in sorted(counts.items())]
    lonely = [f"bucket {w}x{h} holds one photo: a batch from it repeats that photo (with "
              "--batch-size above 1) and it gets the fewest class images; add photos of a similar "
              "shape, or crop it to the shape of another bucket"
              for (w, h), n in sorted(counts.items()) if n == 1 and len(counts) > 1]
    return lines, lonely
