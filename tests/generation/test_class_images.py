"""Class images: generated once per key and reused, resumable after a kill, or the user's own."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from captioned_sessions import EXAMPLE_PHOTOS, FAST, captioned_session
from PIL import Image

from dreambooth_core.errors import ConfigError, DatasetError
from dreambooth_core.generation.class_images import build_class_images
from dreambooth_core.families.sd_tiny import TINY_VERSION
from dreambooth_core.session.class_images import open_class_store, read_class_images
from dreambooth_core.session.paths import CLASS_MANIFEST

KILL_SCRIPT = Path(__file__).with_name("kill_during_generation.py")
REPO = Path(__file__).resolve().parents[2]


def make(session, storage, model_path, count, **options):
    return build_class_images(session, str(storage), model_path, TINY_VERSION, 64, "cpu", count,
                              **{**FAST, **options})


def files_of(storage, manifest) -> dict[str, bytes]:
    store = open_class_store(str(storage))
    return {f: store.read_bytes(f) for s in manifest.sets for f in s.files}


def mtimes(storage, manifest) -> dict[str, int]:
    store = open_class_store(str(storage))
    return {f: os.stat(store.path(f)).st_mtime_ns for s in manifest.sets for f in s.files}


def test_images_are_made_once_and_reused_by_a_rerun_and_a_larger_count(session, tmp_path, tiny_model_path):
    storage = tmp_path / "sessions"
    first = make(session, storage, tiny_model_path, 3)
    (images,) = first.sets
    assert (images.subject, images.prompt, images.source) == ("shrk", "photo of man", "generated")
    assert len(images.files) == 3 and first.generated >= 3
    for data in files_of(storage, first).values():
        assert Image.open(io.BytesIO(data)).size == (64, 64)
    before = mtimes(storage, first)

    again = make(session, storage, tiny_model_path, 3)
    assert again.generated == 0 and again.sets == first.sets
    assert mtimes(storage, again) == before  # not one file rewritten

    more = make(session, storage, tiny_model_path, 6)
    assert more.sets[0].files[:3] == images.files
    assert {f: mtimes(storage, more)[f] for f in images.files} == before
    assert more.generated == 6 - 4  # the first batch of 2 already held image 3


def test_other_sessions_in_the_same_storage_reuse_the_images(session, tmp_path, tiny_model_path,
                                                             two_subject_photos):
    storage = tmp_path / "sessions"
    make(session, storage, tiny_model_path, 2)
    other = captioned_session(storage, "other", tiny_model_path, two_subject_photos, "man")
    shared = make(other, storage, tiny_model_path, 2)
    assert shared.generated == 0
    assert [s.subject for s in shared.sets] == ["ohwx", "shrk"]
    assert shared.sets[0].files == shared.sets[1].files  # same class prompt, same images


def test_the_same_key_gives_the_same_images_anywhere_and_another_seed_others(session, tmp_path,
                                                                             tiny_model_path):
    here = make(session, tmp_path / "sessions", tiny_model_path, 2)
    elsewhere = make(session, tmp_path / "elsewhere", tiny_model_path, 2)
    reseeded = make(session, tmp_path / "reseeded", tiny_model_path, 2, seed=1)
    assert files_of(tmp_path / "sessions", here) == files_of(tmp_path / "elsewhere", elsewhere)
    assert set(files_of(tmp_path / "reseeded", reseeded).values()).isdisjoint(
        files_of(tmp_path / "sessions", here).values())
    images = list(files_of(tmp_path / "sessions", here).values())
    assert images[0] != images[1]  # each image has its own noise


@pytest.mark.slow
def test_a_killed_generation_keeps_its_images_and_a_rerun_completes_it(session, tmp_path, tiny_model_path):
    storage = tmp_path / "sessions"
    env = {**os.environ, "KILL_AFTER_IMAGES": "3", "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, str(KILL_SCRIPT), str(storage), "demo", tiny_model_path,
                             TINY_VERSION, "6"], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    store = open_class_store(str(storage))
    (key,) = [name for name in store.list(".")]
    kept = sorted(n for n in store.list(key) if n.endswith(".png"))
    assert kept == ["000000.png", "000001.png", "000002.png"]
    before = {n: store.read_bytes(f"{key}/{n}") for n in kept}

    resumed = make(session, storage, tiny_model_path, 6)
    assert resumed.generated == 3
    after = files_of(storage, resumed)
    assert {n: after[f"{key}/{n}"] for n in kept} == before
    uninterrupted = make(session, tmp_path / "uninterrupted", tiny_model_path, 6)
    assert after == files_of(tmp_path / "uninterrupted", uninterrupted)


def test_the_manifest_is_in_the_session_and_names_readable_images(session, tmp_path, tiny_model_path):
    manifest = make(session, tmp_path / "sessions", tiny_model_path, 2)
    stored = session.read_json(CLASS_MANIFEST)
    assert stored["sets"] == [s.model_dump() for s in manifest.sets] and stored["digest"] == manifest.digest
    read = list(read_class_images(manifest))
    assert [s.prompt for s, _ in read] == ["photo of man"] * 2
    assert all(Image.open(io.BytesIO(data)).size == (64, 64) for _, data in read)


def test_a_class_prompt_override_and_its_class_word(session, tmp_path, tiny_model_path):
    manifest = make(session, tmp_path / "sessions", tiny_model_path, 1, class_prompt="a {class}, outdoors")
    assert manifest.sets[0].prompt == "a man, outdoors"


def test_a_subject_without_class_word_is_refused_with_the_fix(tmp_path, tiny_model_path):
    bare = captioned_session(tmp_path / "sessions", "bare", tiny_model_path, EXAMPLE_PHOTOS, None)
    with pytest.raises(ConfigError, match=r"shrk have no class word.*--class-word"):
        make(bare, tmp_path / "sessions", tiny_model_path, 1)
    made = make(bare, tmp_path / "sessions", tiny_model_path, 1, class_prompt="photo of a person")
    assert made.sets[0].prompt == "photo of a person"


def own_folder(tmp_path) -> Path:
    folder = tmp_path / "class-photos"
    folder.mkdir()
    for index, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200)]):
        Image.new("RGB", (120, 90), colour).save(folder / f"man ({index}).jpg")
    (folder / "notes.txt").write_text("not an image: ignored")
    return folder


def test_own_class_images_are_checked_cropped_and_resized(session, tmp_path, tiny_model_path):
    manifest = make(session, tmp_path / "sessions", tiny_model_path, 200, own_folder=str(own_folder(tmp_path)))
    assert manifest.generated == 0
    (images,) = manifest.sets
    assert images.source == "folder" and len(images.files) == 3 and images.prompt == "photo of man"
    pictures = [Image.open(io.BytesIO(d)).convert("RGB") for d in files_of(tmp_path / "sessions", manifest).values()]
    assert all(p.size == (64, 64) for p in pictures)
    strongest = {max(range(3), key=p.getpixel((32, 32)).__getitem__) for p in pictures}
    assert strongest == {0, 1, 2}  # the red, green and blue photos, each made once


def test_a_bad_file_among_own_class_images_is_named_with_the_fix(session, tmp_path, tiny_model_path):
    folder = own_folder(tmp_path)
    (folder / "broken.jpg").write_bytes(b"this is not a JPEG")
    Image.new("RGB", (20, 20)).save(folder / "tiny.png")
    with pytest.raises(DatasetError) as error:
        make(session, tmp_path / "sessions", tiny_model_path, 2, own_folder=str(folder))
    message = str(error.value)
    assert "broken.jpg: cannot be read as an image" in message
    assert "tiny.png: 20x20" in message and "Fix:" in message
    assert "man (0).jpg" not in message


def test_a_missing_own_folder_is_named(session, tmp_path, tiny_model_path):
    with pytest.raises(DatasetError, match="class images folder .*nowhere.* does not exist"):
        make(session, tmp_path / "sessions", tiny_model_path, 2, own_folder=str(tmp_path / "nowhere"))


def test_the_store_works_on_object_storage(session, tiny_model_path):
    storage = "memory://generation-test"
    first = make(session, storage, tiny_model_path, 2)
    again = make(session, storage, tiny_model_path, 2)
    assert first.generated >= 2 and again.generated == 0
    assert [len(data) > 0 for _, data in read_class_images(again)] == [True, True]


def test_a_deleted_class_image_and_a_damaged_manifest_are_made_again_the_same(session, tmp_path,
                                                                              tiny_model_path):
    """Derived files: the manifest is written by every run, and a missing image is rendered
    again from its own seed, to the same bytes."""
    storage = tmp_path / "sessions"
    first = make(session, storage, tiny_model_path, 3)
    images = files_of(storage, first)
    store = open_class_store(str(storage))
    store.remove(first.sets[0].files[1])
    session.write_bytes(CLASS_MANIFEST, b'{"storage": ')

    again = make(session, storage, tiny_model_path, 3)

    assert again.generated >= 1 and files_of(storage, again) == images
    assert session.read_json(CLASS_MANIFEST) == first.model_dump(exclude={"generated"})
