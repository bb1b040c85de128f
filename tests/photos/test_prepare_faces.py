"""Crops keep the face; the fast path matches the plain Pillow loop; the contact sheet shows every crop."""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from dreambooth_core.photos.contact_sheet import contact_sheet
from dreambooth_core.photos.crop import load_photo, prepare_image, prepare_photo, square_around
from dreambooth_core.photos.prepare import prepare_many

data = pytest.importorskip("skimage.data")


def jpeg(image: Image.Image, orientation: int = 1, quality: int = 92) -> bytes:
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality, exif=exif)
    return out.getvalue()


def wide_photo_with_face_on_the_right() -> Image.Image:
    rng = np.random.default_rng(0)
    ramp = np.linspace(30, 200, 2400)[None, :, None]
    photo = Image.fromarray((rng.normal(0, 10, (1500, 2400, 3)) + ramp).clip(0, 255).astype(np.uint8))
    photo.paste(Image.fromarray(data.astronaut()).resize((900, 900)), (1450, 300))
    return photo


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)), dtype=np.int16)


def test_square_is_centred_on_the_face_and_clamped_to_the_photo():
    assert square_around((300, 100), (140, 40, 160, 60)) == (100, 0, 200, 100)
    assert square_around((300, 100), (0, 40, 20, 60)) == (0, 0, 100, 100)      # clamped left
    assert square_around((300, 100), (280, 40, 300, 60)) == (200, 0, 300, 100)  # clamped right
    assert square_around((100, 300), None) == (0, 100, 100, 200)                # no face: centre


def test_the_crop_keeps_the_face_of_a_wide_photo():
    prepared = prepare_photo("p.jpg", jpeg(wide_photo_with_face_on_the_right()), 256)
    left, top, right, bottom = prepared.crop_box
    assert (right - left, bottom - top) == (1500, 1500)
    face = prepared.face_box
    assert face is not None and left < face[0] and face[2] < right
    assert left > 450  # a centre crop would start at 450 and cut the face


@pytest.mark.parametrize("orientation", range(1, 9))
def test_fast_path_matches_the_plain_pillow_loop(orientation):
    """Reduced decode + EXIF applied after the resize = full decode, exif_transpose, crop, LANCZOS."""
    data_ = jpeg(wide_photo_with_face_on_the_right(), orientation)
    fast = prepare_photo("p.jpg", data_, 512)
    plain_png, plain_box = prepare_image(load_photo("p.jpg", data_), 512)
    assert fast.crop_box == plain_box
    difference = np.abs(pixels(fast.png) - pixels(plain_png))
    assert difference.mean() < 2.0 and np.percentile(difference, 99) < 12


def test_the_upright_photo_is_what_gets_cropped():
    # Stored sideways (orientation 6: turn 90° clockwise to display): the result is upright.
    upright = wide_photo_with_face_on_the_right()
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    prepared = prepare_photo("p.jpg", jpeg(stored, 6), 256)
    assert prepared.face_box is not None
    assert prepared.crop_box == prepare_photo("p.jpg", jpeg(upright), 256).crop_box


def test_preparation_is_deterministic_and_independent_of_the_workers():
    photos = [(f"p{i}.jpg", jpeg(ImageOps.mirror(wide_photo_with_face_on_the_right()) if i % 2 else
                                 wide_photo_with_face_on_the_right(), quality=80 + i)) for i in range(4)]
    serial = list(prepare_many(photos, 128, workers=1))
    parallel = list(prepare_many(photos, 128, workers=2))
    assert serial == parallel == list(prepare_many(photos, 128, workers=1))


def test_an_unreadable_photo_is_returned_as_its_error_in_a_worker():
    photos = [("good.jpg", jpeg(wide_photo_with_face_on_the_right())), ("bad.jpg", b"\xff\xd8\xff nothing")]
    good, bad = prepare_many(photos, 64, workers=2)
    assert good.png and "bad.jpg" in str(bad) and "cannot be read" in str(bad)


def test_a_decompression_bomb_is_refused_by_name(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match="bomb.jpg: too many pixels"):
        prepare_photo("bomb.jpg", jpeg(Image.new("RGB", (40, 40))), 32)


def test_contact_sheet_is_a_grid_of_thumbnails():
    squares = [prepare_image(Image.new("RGB", (64, 64), colour), 64)[0]
               for colour in ("red", "green", "blue", "white", "black")]
    sheet = Image.open(io.BytesIO(contact_sheet(squares, thumbnail=32)))
    assert sheet.format == "PNG" and sheet.size == (3 * 36 + 4, 2 * 36 + 4)  # 3 columns, 2 rows
    assert sheet.getpixel((4 + 16, 4 + 16)) == (255, 0, 0)
    assert sheet.getpixel((4 + 36 + 16, 4 + 36 + 16)) == (0, 0, 0)


def test_worker_processes_use_a_plugged_in_detector():
    from dreambooth_core.photos import faces

    previous = faces.set_detector(lambda image: [(0, 0, 10, 10)])  # top-left corner
    try:
        photos = [(f"p{i}.jpg", jpeg(wide_photo_with_face_on_the_right())) for i in range(2)]
        assert [p.crop_box for p in prepare_many(photos, 64, workers=2)] == [(0, 0, 1500, 1500)] * 2
    finally:
        faces.set_detector(previous)
