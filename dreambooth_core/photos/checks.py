"""Checks of one photo: is it a safe, decodable still image, and is it good training material?

Plain Python (Pillow + numpy). Every finding is a `Problem` with a severity:
error (the photo cannot be used; the run stops), warning (usable, but worse
results are likely) or note (something was converted for you).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict

from dreambooth_core.photos.crop import open_image

Severity = Literal["error", "warning", "note"]

# Extensions each format may carry. MPO is the multi-picture JPEG phones write.
FORMAT_EXTENSIONS = {"JPEG": (".jpg", ".jpeg"), "MPO": (".jpg", ".jpeg"), "PNG": (".png",),
                     "WEBP": (".webp",), "BMP": (".bmp",), "TIFF": (".tif", ".tiff"),
                     "GIF": (".gif",)}
# Pillow's own limit (about 89 megapixels): above it, its DecompressionBombWarning
# is raised here as an error, before any pixel is decoded.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
# longest side of the copy that sharpness, light and faces are measured on
ANALYSIS_SIDE = 512
BLURRY_BELOW = 50.0        # variance of the Laplacian on that copy (sharp photos: hundreds or more)
# ...and that variance relative to the photo's own contrast (sharp: 0.1 or more, blurred: 0.01):
# a dark or low-contrast photo has a low Laplacian variance without being blurry.
BLURRY_RELATIVE_BELOW = 0.03
DARK_BELOW = 40.0          # mean luminance, 0-255
BLOWN_OUT_ABOVE = 0.30     # share of pixels at 250 or brighter
EXTREME_ASPECT = 2.0       # long side / short side above which a square crop keeps under half
CLOSE_UP_FROM, HALF_BODY_FROM = 0.30, 0.12   # face height / photo height
# faces smaller than this share of the largest one's height are background
SIGNIFICANT_FACE = 0.4
UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f\\:*?"<>|#%]')
MAX_NAME_LENGTH = 150


class Problem(BaseModel):
    """One finding: `code` for scripts, `message` says what is wrong, `fix` what to do."""

    model_config = ConfigDict(frozen=True)
    code: str
    severity: Severity
    message: str
    fix: str


@dataclass
class PhotoFacts:
    """What one photo's checks found; `image` is the small upright RGB copy for later checks."""

    name: str
    problems: list[Problem] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    format: str | None = None
    mode: str | None = None
    faces: list[tuple[int, int, int, int]] | None = None  # in the analysis copy's pixels
    framing: str | None = None
    sharpness: float | None = None
    brightness: float | None = None
    image: Image.Image | None = None

    def add(self, code: str, severity: Severity, message: str, fix: str) -> None:
        self.problems.append(Problem(code=code, severity=severity, message=message, fix=fix))

    @property
    def decoded(self) -> bool:
        return self.image is not None


def safe_name(name: str) -> str:
    """A suggested replacement for an unsafe file name: letters, digits, spaces and ()._- only."""
    path = PurePosixPath(name)
    stem = unicodedata.normalize("NFC", re.sub(r"\\x[0-9a-f]{2}", "", path.stem))
    stem = re.sub(r"[^\w ().-]+", "_", stem.encode("utf-8", "replace").decode()).strip(" ._") or "photo"
    return stem[:MAX_NAME_LENGTH] + path.suffix.lower()


def check_name(facts: PhotoFacts) -> None:
    """File names become captions and object-store keys: refuse those that break either."""
    name = PurePosixPath(facts.name).name
    try:
        name.encode("utf-8")
        # escaped by the folder listing
        undecodable = re.search(r"\\x[0-9a-f]{2}", name) is not None
    except UnicodeEncodeError:
        undecodable = True
    if undecodable:
        facts.add("unsafe-name", "error", "the file name is not valid UTF-8",
                  f"rename it, e.g. to {safe_name(name)!r}")
        return
    bad = sorted(set(UNSAFE_NAME.findall(name)))
    if bad:
        shown = " ".join(repr(c) for c in bad)
        facts.add("unsafe-name", "error", f"the file name contains characters that break paths, "
                  f"URLs or captions: {shown}", f"rename it, e.g. to {safe_name(name)!r}")
    elif len(name) > MAX_NAME_LENGTH or name != name.strip():
        facts.add("unsafe-name", "error",
                  "the file name is longer than 150 characters or starts or "
                  "ends with a space", f"rename it, e.g. to {safe_name(name)!r}")


def check_photo(name: str, data: bytes, resolution: int, accepted_extensions: set[str],
                detect_faces: Callable[[Image.Image], list] | None = None,
                allow_several_faces: bool = False) -> PhotoFacts:
    """Every per-photo check. `detect_faces` is None when the subject is not a person."""
    facts = PhotoFacts(name=name)
    check_name(facts)
    image = _decode(facts, data, accepted_extensions)
    if image is None:
        return facts
    _check_modes(facts, image)
    try:
        orientation = image.getexif().get(0x0112, 1)
        transposed = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a malformed EXIF block must not hide the other checks
        orientation, transposed = 1, image
        facts.add("bad-exif", "warning", "its EXIF metadata is malformed, so its orientation "
                  "cannot be read; it is used as stored", "re-save the photo in an image editor")
    if orientation not in (1, None):
        facts.add("exif-orientation", "note", f"EXIF orientation {orientation}: the photo is "
                  "stored sideways or mirrored and is turned upright for training",
                  "nothing to do (it is applied automatically)")
    facts.width, facts.height = transposed.size
    _check_size(facts, resolution)
    small = _rgb(transposed)
    small.thumbnail((ANALYSIS_SIDE, ANALYSIS_SIDE), Image.Resampling.BOX)
    facts.image = small
    _check_light_and_focus(facts, small)
    if detect_faces is not None:
        _check_faces(facts, small, detect_faces, allow_several_faces)
    return facts


def _decode(facts: PhotoFacts, data: bytes, accepted_extensions: set[str]) -> Image.Image | None:
    extension = PurePosixPath(facts.name).suffix.lower()
    try:
        image = open_image(data)
    except Image.DecompressionBombError as exc:
        size = _declared_size(str(exc))
        facts.add("decompression-bomb", "error", f"the file declares {size}, more than the "
                  f"{MAX_PIXELS / 1e6:.0f}-megapixel limit: it is a decompression bomb or an "
                  "unusually huge image, and decoding it could exhaust memory",
                  "replace it with a photo downscaled to at most 20 megapixels")
        return None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        accepted = ", ".join(sorted(accepted_extensions))
        facts.add("not-an-image", "error", "cannot be read as an image: its content is not a "
                  "JPEG, PNG, WebP, BMP or TIFF picture",
                  f"remove it from the photos folder or replace it with a photo ({accepted})")
        return None
    facts.format, facts.mode = ("JPEG" if image.format == "MPO" else image.format), image.mode
    frames = getattr(image, "n_frames", 1)
    if image.format != "MPO" and frames > 1:
        facts.add("animated", "error", f"an animated {image.format} ({frames} frames)",
                  "save the frame you want as a still PNG or JPEG")
    if extension not in accepted_extensions:
        facts.add("extension-not-used", "error", f"a {image.format} image with the extension "
                  f"'{extension}', which training does not read",
                  f"convert it to JPEG or PNG ({', '.join(sorted(accepted_extensions))})")
    elif extension not in FORMAT_EXTENSIONS[image.format]:
        facts.add("wrong-extension", "warning", f"a {facts.format} image named '{extension}'",
                  f"rename it to end in '{FORMAT_EXTENSIONS[image.format][0]}'")
    try:
        if image.format == "JPEG":
            image.draft("RGB", (2 * ANALYSIS_SIDE, 2 * ANALYSIS_SIDE))  # decode at reduced size
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        truncated = "truncated" in str(exc)
        facts.add("truncated" if truncated else "undecodable", "error",
                  f"cannot be read as an image: the file is {'cut short' if truncated else 'corrupt'} "
                  f"({exc})", "copy the photo again from its source, or remove it")
        return None
    return image


def _declared_size(message: str) -> str:
    """Pillow's message names the pixel count: 'Image size (900000000 pixels) exceeds ...'."""
    found = re.search(r"\((\d+) pixels\)", message)
    return f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else "a huge size"


def _check_modes(facts: PhotoFacts, image: Image.Image) -> None:
    mode = image.mode
    if mode == "CMYK":
        facts.add("cmyk", "note", "CMYK colours (a print format): converted to RGB, colours may "
                  "shift slightly", "export it as an sRGB JPEG for exact colours")
    elif mode.startswith("I") or mode == "F" or image.info.get("bits", 8) > 8:
        facts.add("16-bit", "note", f"{mode} pixels (more than 8 bits per channel): reduced to "
                  "8-bit RGB", "nothing to do; export 8-bit sRGB to control the conversion")
    elif mode in ("P", "PA"):
        facts.add("palette", "note", "palette colours (at most 256): converted to RGB",
                  "use the original full-colour photo if you have it")
    elif mode in ("1", "L", "LA"):
        facts.add("greyscale", "note", "a black-and-white photo: converted to grey RGB",
                  "add colour photos unless you want the model to learn black and white")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        facts.add("alpha", "note", "transparency: flattened onto white for training",
                  "flatten it yourself if another background suits the subject better")


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = pixels.max() if pixels.size and pixels.max() > 255 else 255
        image = Image.fromarray((pixels * (255 / max(top, 1))).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "P", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _check_size(facts: PhotoFacts, resolution: int) -> None:
    side, long = min(facts.width, facts.height), max(facts.width, facts.height)
    if side < resolution / 2:
        facts.add("too-small", "error", f"{facts.width}x{facts.height}: its shorter side is less "
                  f"than half the training resolution ({resolution}), so it would be blown up more "
                  "than twice and look blurry", f"use a photo at least {resolution}x{resolution}")
    elif side < resolution:
        facts.add("small", "warning", f"{facts.width}x{facts.height}: smaller than the training "
                  f"resolution ({resolution}), so it is enlarged and may look soft",
                  f"use a photo at least {resolution}x{resolution} if you have one")
    if long / side > EXTREME_ASPECT:
        keep = round(100 * side / long)
        facts.add("extreme-aspect", "warning", f"{facts.width}x{facts.height}: the square crop "
                  f"keeps only {keep}% of it and may cut the subject",
                  "crop it yourself to a square (or near-square) around the subject")


def _check_light_and_focus(facts: PhotoFacts, small: Image.Image) -> None:
    grey = np.asarray(small.convert("L"), dtype=np.float32)
    if min(grey.shape) >= 3:
        laplacian = (grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1]
                     - 4 * grey[1:-1, 1:-1])
        facts.sharpness = float(laplacian.var())
    facts.brightness = float(grey.mean())
    relative = (facts.sharpness or 0.0) / (float(grey.var()) + 1.0)
    if facts.sharpness is not None and facts.sharpness < BLURRY_BELOW and relative < BLURRY_RELATIVE_BELOW:
        facts.add("blurry", "warning", f"blurry (sharpness {facts.sharpness:.0f}, sharp photos "
                  f"score {BLURRY_BELOW:.0f} or more)", "replace it with a sharp photo: the model "
                  "learns the blur")
    if facts.brightness < DARK_BELOW:
        facts.add("dark", "warning", f"very dark (mean brightness {facts.brightness:.0f} of 255)",
                  "use a well-lit photo, or brighten it")
    clipped = float((grey >= 250).mean())
    if clipped > BLOWN_OUT_ABOVE:
        facts.add("blown-out", "warning", f"blown out: {100 * clipped:.0f}% of it is pure white",
                  "use a photo with correct exposure")


def _check_faces(facts: PhotoFacts, small: Image.Image, detect_faces, allow_several: bool) -> None:
    boxes = detect_faces(small)
    largest = max((b[3] - b[1] for b in boxes), default=0)
    faces = [b for b in boxes if b[3] - b[1] >= SIGNIFICANT_FACE * largest]
    facts.faces = faces
    if not faces:
        facts.add("no-face", "warning", "no face found", "if the subject is a person, use photos "
                  "where the face is visible; if it is not, pass --subject-type other or its "
                  "--class-word (e.g. dog)")
        return
    if len(faces) > 1 and allow_several:
        facts.add("several-faces", "note", f"{len(faces)} faces (allowed by --allow-several-faces)",
                  "nothing to do; the caption should say which one is the subject")
    elif len(faces) > 1:
        facts.add("several-faces", "error", f"{len(faces)} faces: the model cannot tell which one "
                  "is the subject", "crop the photo to the subject alone, or pass "
                  "--allow-several-faces to keep it")
    height = max(b[3] - b[1] for b in faces) / small.height
    facts.framing = ("close-up" if height >= CLOSE_UP_FROM else
                     "half-body" if height >= HALF_BODY_FROM else "full-body")
