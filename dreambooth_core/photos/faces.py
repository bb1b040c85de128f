"""Finding faces in a photo, with a detector that can be swapped for a better one.

The default detector is OpenCV's frontal-face Haar cascade: its model file ships
inside the opencv-python-headless 4.x wheel, so it works offline. It runs on a
grey copy whose shorter side is downscaled to DETECT_SIDE pixels (a 12-MP photo
takes tens of milliseconds instead of seconds) and is deterministic. Faces down
to 1/24 of the shorter side are found (full-body shots), and minNeighbors=8
keeps clothing and backgrounds from passing as faces.

To use another detector, give `set_detector` any callable that takes a PIL
image and returns (left, top, right, bottom) boxes in that image's pixels:

    from dreambooth_core.photos import faces
    faces.set_detector(my_detector)   # faces.set_detector(None) restores the default
"""

from __future__ import annotations

import threading
from typing import Protocol

from PIL import Image

Box = tuple[int, int, int, int]
DETECT_SIDE = 600  # shorter side of the copy the cascade runs on
CASCADE = "haarcascade_frontalface_default.xml"


class FaceDetector(Protocol):
    def __call__(self, image: Image.Image) -> list[Box]:
        """Face boxes (left, top, right, bottom) in `image`'s pixels, in any order."""


_local = threading.local()
_loading = threading.Lock()  # two threads importing cv2 at once see a half-made module


def _cascade():
    """One classifier per thread: OpenCV's CascadeClassifier is not safe to share between threads."""
    if getattr(_local, "cascade", None) is None:
        with _loading:
            _local.cascade = _load_cascade()
    return _local.cascade


def _load_cascade():
    import cv2  # imported on first use: only preparation and validation need it

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
    if cascade.empty():
        raise RuntimeError(f"OpenCV's {CASCADE} is missing from {cv2.data.haarcascades}. "
                           "Install opencv-python-headless 4.x (5.x wheels do not ship it).")
    return cascade


def haar_faces(image: Image.Image) -> list[Box]:
    """OpenCV Haar cascade on a downscaled grey copy; boxes scaled back to `image`."""
    import numpy as np

    grey = image.convert("L")
    scale = min(1.0, DETECT_SIDE / min(grey.size))
    if scale < 1.0:
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                           Image.Resampling.BOX)
    pixels = np.asarray(grey, dtype=np.uint8)
    side = min(pixels.shape)
    found = _cascade().detectMultiScale(pixels, scaleFactor=1.1, minNeighbors=8,
                                        minSize=(max(20, side // 24),) * 2)
    boxes = []
    for x, y, w, h in (found if len(found) else []):
        left, top = int(x / scale), int(y / scale)
        right, bottom = min(image.width, round((x + w) / scale)), min(image.height, round((y + h) / scale))
        boxes.append((left, top, right, bottom))
    return boxes


_detector: FaceDetector = haar_faces


def set_detector(detector: FaceDetector | None) -> FaceDetector:
    """Use `detector` for every later `find_faces` call (None: the Haar default); returns the old one."""
    global _detector
    previous, _detector = _detector, detector or haar_faces
    return previous


def current_detector() -> FaceDetector:
    return _detector


def find_faces(image: Image.Image) -> list[Box]:
    """Faces in `image` as (left, top, right, bottom) pixel boxes, largest first."""
    boxes = [tuple(int(v) for v in box) for box in _detector(image)]
    return sorted(boxes, key=lambda b: (-(b[2] - b[0]) * (b[3] - b[1]), b[1], b[0]))
