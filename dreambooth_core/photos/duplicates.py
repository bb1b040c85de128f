"""Near-duplicate photos by perceptual hash: the same photo twice, or a resized,
re-encoded or slightly recoloured copy.

Two 64-bit hashes of the small grey image must both be close: dHash (brightness
gradients between neighbours) and pHash (signs of the low DCT frequencies). Each
alone confuses different photos of similar layout now and then; both together
rarely do, while a resized or re-encoded copy stays within a few bits of both.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

MAX_DISTANCE = 8  # differing bits (of 64) in each hash for "the same photo"


def dhash(image: Image.Image) -> int:
    grey = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    return _bits(grey[:, 1:] > grey[:, :-1])


def phash(image: Image.Image) -> int:
    grey = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS),
                      dtype=np.float64)
    dct = _dct_matrix()
    low = (dct @ grey @ dct.T)[:8, :8].flatten()
    return _bits(low > np.median(low[1:]))


@lru_cache(maxsize=1)
def _dct_matrix(n: int = 32) -> np.ndarray:
    k, x = np.arange(n)[:, None], np.arange(n)[None, :]
    return np.cos(np.pi * (2 * x + 1) * k / (2 * n))


def _bits(flags: np.ndarray) -> int:
    return int("".join("1" if f else "0" for f in flags.flatten()), 2)


def distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def find_near_duplicates(images: dict[str, Image.Image]) -> list[tuple[str, str, int]]:
    """(earlier name, later name, bits differing) for each later photo that copies an earlier one."""
    hashes = {name: (dhash(image), phash(image)) for name, image in images.items()}
    names, pairs = sorted(hashes), []
    for i, later in enumerate(names):
        for earlier in names[:i]:
            d = distance(hashes[earlier][0], hashes[later][0])
            p = distance(hashes[earlier][1], hashes[later][1])
            if d <= MAX_DISTANCE and p <= MAX_DISTANCE:
                pairs.append((earlier, later, max(d, p)))
                break
    return pairs
