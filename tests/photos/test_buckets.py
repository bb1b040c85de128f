"""Aspect-ratio buckets: every photo in the bucket of its shape, the face inside the crop."""

import io
import logging
import math

import numpy as np
import pytest
from PIL import Image
from sessions import opened_session, prepare_folder
from test_prepare_faces import jpeg, wide_photo_with_face_on_the_right

from dreambooth_core.photos.buckets import bucket_grid, bucket_step, nearest_bucket
from dreambooth_core.photos.crop import prepare_photo
from dreambooth_core.session.dataset_manifest import load_dataset_manifest
from dreambooth_core.session.state import update_state


def test_buckets_hold_the_resolutions_area_in_steps_the_denoiser_divides():
    # (resolution, the denoiser's pixel multiple, the step): about resolution / 16, a multiple of both
    for resolution, multiple, step in ((64, 8, 16), (512, 64, 64), (768, 64, 64), (1024, 32, 64), (1024, 16, 64)):
        assert bucket_step(resolution, multiple) == step
        grid = bucket_grid(resolution, step)
        assert (resolution, resolution) in grid
        assert all(w % step == 0 and h % step == 0 for w, h in grid)
        assert all(0.85 * resolution ** 2 <= w * h <= resolution ** 2 for w, h in grid)
        assert sorted((h, w) for w, h in grid) == grid  # a portrait bucket for every landscape one
        assert all(max(w / h, h / w) <= 2 for w, h in grid)
    assert (832, 1216) in bucket_grid(1024, 64) and (1216, 832) in bucket_grid(1024, 64)


def test_the_nearest_bucket_is_the_nearest_aspect_ratio():
    grid = bucket_grid(1024, 64)
    assert nearest_bucket((3000, 4000), grid) == (896, 1152)   # a 3:4 portrait
    assert nearest_bucket((4000, 3000), grid) == (1152, 896)
    assert nearest_bucket((500, 500), grid) == (1024, 1024)
    assert nearest_bucket((5000, 1000), grid) == (1344, 768)  # a panorama: the widest bucket


@pytest.mark.parametrize("shape", ["wide", "tall, stored sideways"])
def test_a_photo_keeps_its_shape_and_its_face(shape):
    """2400x1500 (1.6:1); or its right part, 1100x1500, stored turned a quarter (EXIF orientation 6)."""
    grid = bucket_grid(256, 16)
    upright = wide_photo_with_face_on_the_right()
    if shape == "wide":
        data = jpeg(upright)
    else:
        upright = upright.crop((1300, 0, 2400, 1500))
        data = jpeg(upright.transpose(Image.Transpose.ROTATE_90), 6)
    prepared = prepare_photo("p.jpg", data, 256, buckets=grid)
    assert prepared.size == nearest_bucket(upright.size, grid) and prepared.size != (256, 256)
    assert Image.open(io.BytesIO(prepared.png)).size == prepared.size
    left, top, right, bottom = prepared.crop_box
    assert math.isclose((right - left) / (bottom - top), prepared.size[0] / prepared.size[1], rel_tol=0.02)
    face = prepared.face_box
    assert face is not None and left <= face[0] and face[2] <= right and top <= face[1] and face[3] <= bottom
    as_stored_upright = prepare_photo("p.jpg", jpeg(upright), 256, buckets=grid)
    assert as_stored_upright.crop_box == prepared.crop_box
    difference = np.abs(np.asarray(Image.open(io.BytesIO(prepared.png)), dtype=np.int16)
                        - np.asarray(Image.open(io.BytesIO(as_stored_upright.png)), dtype=np.int16))
    assert difference.mean() < 3  # the same picture, upright (JPEG noise apart)


def photo(width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return jpeg(Image.fromarray(pixels))


SHAPES = {"shrk (1).jpg": (200, 330), "shrk (2).jpg": (180, 300), "shrk (3).jpg": (240, 240),
          "shrk (4).jpg": (250, 245), "shrk (5).jpg": (330, 190)}


@pytest.fixture
def shaped_photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed, (name, size) in enumerate(SHAPES.items()):
        (folder / name).write_bytes(photo(*size, seed))
    return folder


def test_every_photo_lands_in_the_bucket_of_its_aspect(tmp_path, shaped_photos, caplog):
    session = opened_session(tmp_path / "sessions")
    with caplog.at_level(logging.INFO):
        dataset = prepare_folder(session, shaped_photos, 64, workers=1, buckets=16)
    grid = bucket_grid(64, 16)
    for item in load_dataset_manifest(session).items:
        expected = nearest_bucket(SHAPES[item.source.split("/")[-1]], grid)
        assert tuple(item.size) == expected
        assert Image.open(io.BytesIO(session.read_bytes(item.file))).size == expected
    assert dataset.buckets == {"48x80": 2, "64x64": 2, "80x48": 1}
    assert "Aspect-ratio buckets: 48x80: 2 photos; 64x64: 2 photos; 80x48: 1 photo" in caplog.text
    lonely = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lonely) == 1 and "bucket 80x48 holds one photo" in lonely[0]


def test_a_session_that_started_training_on_squares_keeps_them(tmp_path, shaped_photos):
    """--buckets auto turns buckets on for SDXL and FLUX: a session trained before keeps its images."""
    session = opened_session(tmp_path / "sessions")
    squares = prepare_folder(session, shaped_photos, 64, workers=1)
    update_state(session, fingerprint={"training": "started"})
    again = prepare_folder(session, shaped_photos, 64, workers=1, buckets=16)
    assert again.digest == squares.digest and again.buckets == {}
    fresh = opened_session(tmp_path / "sessions", "t")
    assert prepare_folder(fresh, shaped_photos, 64, workers=1, buckets=16).digest != squares.digest
