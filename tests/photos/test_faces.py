"""Faces are found in real photos (scikit-image's public-domain samples); the detector can be swapped."""

import pytest
from PIL import Image

from dreambooth_core.photos import faces
from dreambooth_core.photos.faces import find_faces, set_detector

data = pytest.importorskip("skimage.data")


def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


def two_astronauts() -> Image.Image:
    one = astronaut()
    pair = Image.new("RGB", (one.width * 2, one.height))
    pair.paste(one, (0, 0))
    pair.paste(one, (one.width, 0))
    return pair


def test_one_face_in_the_astronaut_photo():
    (left, top, right, bottom), = find_faces(astronaut())
    assert 150 < left < 200 and 40 < top < 90 and 250 < right < 300 and 140 < bottom < 190


def test_two_faces_side_by_side_largest_first():
    boxes = find_faces(two_astronauts())
    assert len(boxes) == 2
    assert sorted(b[0] < 512 for b in boxes) == [False, True]  # one in each half
    areas = [(r - l) * (b - t) for l, t, r, b in boxes]
    assert areas == sorted(areas, reverse=True)


def test_no_face_in_a_cup_of_coffee():
    assert find_faces(Image.fromarray(data.coffee())) == []


def test_a_large_photo_is_searched_downscaled_and_boxes_come_back_in_its_pixels():
    (left, top, right, bottom), = find_faces(astronaut().resize((3000, 3000)))
    # the 512-px box scaled by 3000/512
    assert abs(left - 177 * 5.86) < 60 and abs(bottom - 161 * 5.86) < 60


def test_a_small_face_in_a_full_body_shot_is_found():
    photo = Image.new("RGB", (3000, 4000), (90, 90, 90))
    photo.paste(astronaut().resize((800, 800)), (1100, 300))
    assert len(find_faces(photo)) == 1


def test_detection_is_deterministic():
    assert find_faces(two_astronauts()) == find_faces(two_astronauts())


def test_another_detector_can_be_plugged_in():
    previous = set_detector(lambda image: [(0, 0, 10, 10), (5, 5, 45, 45)])
    try:
        assert find_faces(astronaut()) == [(5, 5, 45, 45), (0, 0, 10, 10)]
    finally:
        set_detector(previous)
    assert faces._detector is faces.haar_faces
    assert len(find_faces(astronaut())) == 1
