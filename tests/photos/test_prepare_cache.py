"""Preparation is cached per photo; photos may come from any fsspec folder; prepared images
deleted or edited by hand are made again, and an edited photo is never trained on as its old crop."""

import hashlib
import json
import shutil

import fsspec
import pytest
from PIL import Image
from sessions import opened_session, prepare_folder

from dreambooth_core.errors import DatasetError
from dreambooth_core.photos import prepare
from dreambooth_core.photos.originals import find_photos, import_photos
from dreambooth_core.photos.prepare import build_dataset
from dreambooth_core.photos.validate import ValidationSettings, check_session_photos
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import CONTACT_SHEET
from dreambooth_core.session.paths import DATASET_MANIFEST as MANIFEST
from dreambooth_core.session.state import load_state, update_state


@pytest.fixture
def counted(monkeypatch):
    """Names of the photos actually prepared (not reused)."""
    calls = []
    real = prepare.prepare_or_error

    def counting(name, data, resolution):
        calls.append(name)
        return real(name, data, resolution)

    monkeypatch.setattr(prepare, "prepare_or_error", counting)
    return calls


def manifest(session: Session) -> dict:
    return json.loads(session.read_bytes(MANIFEST))


def test_a_rerun_prepares_nothing_and_a_new_resolution_everything(tmp_path, photos, counted):
    session = opened_session(tmp_path / "sessions")
    first = prepare_folder(session, photos, 64, workers=1)
    assert first.prepared == 4 and len(counted) == 4
    assert prepare_folder(session, photos, 64, workers=1) == first.model_copy(update={"prepared": 0})
    assert len(counted) == 4
    assert prepare_folder(session, photos, 32, workers=1).prepared == 4
    assert sorted(session.list("dataset")) == sorted(
        [i["file"].split("/")[1] for i in manifest(session)["items"]] + ["manifest.json"])


def test_adding_one_photo_prepares_only_that_photo(tmp_path, photos, counted):
    session = opened_session(tmp_path / "sessions")
    prepare_folder(session, photos, 64, workers=1)
    before = {i["source"]: i for i in manifest(session)["items"]}
    Image.new("RGB", (90, 70), "purple").save(photos / "shrk (5).png")
    counted.clear()

    summary = prepare_folder(session, photos, 64, workers=1)

    assert counted == ["shrk (5).png"] and summary.prepared == 1 and summary.count == 5
    after = {i["source"]: i for i in manifest(session)["items"]}
    assert all(after[source] == item for source, item in before.items())
    assert session.exists("photos/shrk (5).png") and session.exists(CONTACT_SHEET)


def test_a_removed_photo_leaves_the_session_before_training(tmp_path, photos):
    session = opened_session(tmp_path / "sessions")
    prepare_folder(session, photos, 64, workers=1)
    gone = sorted(photos.iterdir())[0]
    gone.unlink()
    assert prepare_folder(session, photos, 64, workers=1).count == 3
    assert not session.exists(f"photos/{gone.name}")
    assert len(session.list("dataset")) == 4  # three images and the manifest


def test_once_training_has_started_the_photo_set_is_fixed(tmp_path, photos):
    session = opened_session(tmp_path / "sessions")
    prepare_folder(session, photos, 64, workers=1)
    update_state(session, fingerprint={"training": "started"})
    Image.new("RGB", (90, 70), "purple").save(photos / "shrk (5).png")
    with pytest.raises(DatasetError, match="differ from those session 's' was started with"):
        check_session_photos(session, photos, ValidationSettings(resolution=64))  # the flow's photo check
    assert import_photos(session, photos) == import_photos(session, None)  # the session's own
    assert prepare_folder(session, photos, 64).count == 4


def test_an_old_manifest_is_kept_once_training_has_started(tmp_path, photos, counted, monkeypatch):
    session = opened_session(tmp_path / "sessions")
    prepare_folder(session, photos, 64, workers=1)
    update_state(session, fingerprint={"training": "started"})
    session.remove(CONTACT_SHEET)
    monkeypatch.setattr("dreambooth_core.photos.crop.PREPARE_VERSION", 99)
    monkeypatch.setattr(prepare, "PREPARE_VERSION", 99)
    counted.clear()
    assert prepare_folder(session, photos, 64).prepared == 0 and not counted
    assert session.exists(CONTACT_SHEET)  # made again from the prepared images


def test_photos_from_an_fsspec_folder(tmp_path, photos):
    fs = fsspec.filesystem("memory")
    for file in sorted(photos.iterdir()):
        fs.pipe(f"/upload/{file.name}", file.read_bytes())
    fs.pipe("/upload/ohwx/extra.png", (photos / sorted(p.name for p in photos.iterdir())[0]).read_bytes())
    fs.pipe("/upload/ohwx/extra.txt", b"a photo of ohwx")
    fs.pipe("/upload/notes.md", b"not a photo")
    try:
        found = find_photos("memory://upload")
        assert len(found) == 5 and all(str(p).startswith("memory://") for p in found)
        session = opened_session(tmp_path / "sessions")
        summary = prepare_folder(session, "memory://upload", 64, workers=1)
        assert summary.count == 5
        assert session.read_bytes("photos/ohwx/extra.txt") == b"a photo of ohwx"
        assert not session.exists("photos/notes.md")
    finally:
        fs.rm("/upload", recursive=True)


def test_a_missing_fsspec_folder_is_named():
    with pytest.raises(DatasetError, match="memory://nowhere"):
        find_photos("memory://nowhere")


def test_local_folders_still_give_paths(photos):
    assert find_photos(photos) == sorted(photos.iterdir())
    assert find_photos(str(photos)) == sorted(photos.iterdir())


def test_a_moved_photos_folder_does_not_stop_a_resume(tmp_path, photos):
    session = opened_session(tmp_path / "sessions")
    prepare_folder(session, photos, 64, workers=1)
    shutil.rmtree(photos)
    assert prepare_folder(session, photos, 64).count == 4


# --- derived files heal ------------------------------------------------------------------

def prepared(session: Session) -> dict[str, str]:
    """{source: prepared file} of the manifest."""
    return {i["source"]: i["file"] for i in manifest(session)["items"]}


@pytest.mark.parametrize("damage", ["deleted", "edited"])
@pytest.mark.parametrize("started", [False, True])
def test_a_prepared_image_deleted_or_edited_by_hand_is_made_again(damage, started, tmp_path, photos,
                                                                  counted, caplog):
    session = opened_session(tmp_path / "sessions")
    first = prepare_folder(session, photos, 64, workers=1)
    if started:
        update_state(session, fingerprint={"training": "started"})
    source, file = sorted(prepared(session).items())[1]
    original = session.read_bytes(file)
    if damage == "deleted":
        session.remove(file)
    else:
        session.write_bytes(file, session.read_bytes(sorted(prepared(session).values())[0]))  # another image
    counted.clear()

    with caplog.at_level("WARNING", logger="dreambooth"):
        again = prepare_folder(session, photos, 64, workers=1)

    assert session.read_bytes(file) == original  # the same image, from the photo at the recorded crop
    assert again.digest == first.digest and again.count == first.count  # the fingerprint stays
    why = "missing" if damage == "deleted" else "not the image that was prepared"
    assert f"{file} (prepared from {source}) is {why}" in caplog.text
    assert not counted  # no face detection or full preparation: only the damaged image is remade
    caplog.clear()
    with caplog.at_level("WARNING", logger="dreambooth"):
        prepare_folder(session, photos, 64, workers=1)
    assert not caplog.text  # healed for good


def test_a_manifest_from_before_image_hashes_records_them_and_then_notices_an_edit(tmp_path, photos, caplog):
    session = opened_session(tmp_path / "sessions")
    prepare_folder(session, photos, 64, workers=1)
    old = manifest(session)
    for item in old["items"]:
        del item["sha256"]
    session.write_json(MANIFEST, old)
    prepare_folder(session, photos, 64, workers=1)
    assert all(item["sha256"] for item in manifest(session)["items"])

    file = old["items"][0]["file"]
    session.write_bytes(file, b"not the prepared image")
    with caplog.at_level("WARNING", logger="dreambooth"):
        prepare_folder(session, photos, 64, workers=1)
    assert f"{file} (prepared from" in caplog.text and session.read_bytes(file) != b"not the prepared image"


def test_a_damaged_manifest_is_rebuilt_with_the_same_digest(tmp_path, photos, caplog):
    session = opened_session(tmp_path / "sessions")
    first = prepare_folder(session, photos, 64, workers=1)
    update_state(session, fingerprint={"training": "started"})
    session.write_bytes(MANIFEST, b'{"resolution": 64, "items": [')  # cut off
    with caplog.at_level("WARNING", logger="dreambooth"):
        again = prepare_folder(session, photos, 64, workers=1)
    assert again.digest == first.digest
    assert f"{MANIFEST} is damaged; preparing the photos again" in caplog.text


def test_a_photo_edited_in_the_session_before_training_is_prepared_again(tmp_path, photos, caplog):
    session = opened_session(tmp_path / "sessions")
    settings = ValidationSettings(resolution=64)
    check_session_photos(session, photos, settings)
    first = prepare_folder(session, None, 64, workers=1)
    name = sorted(p.name for p in photos.iterdir())[0]
    edited = (tmp_path / "edited.png")
    Image.open(photos / name).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(edited)
    session.write_bytes(f"photos/{name}", edited.read_bytes())

    with caplog.at_level("WARNING", logger="dreambooth"):
        _, photo_set = check_session_photos(session, None, settings)  # the session's own copies
        again = build_dataset(session, photo_set, 64, workers=1)

    assert f"photos/{name} changed in session 's' since it was imported" in caplog.text
    assert photo_set.files[name] == hashlib.sha256(edited.read_bytes()).hexdigest()
    assert again.digest != first.digest and again.prepared == 1  # the new crop, not the old one


def test_a_photo_edited_in_the_session_after_training_started_is_refused_naming_it(tmp_path, photos):
    session = opened_session(tmp_path / "sessions")
    settings = ValidationSettings(resolution=64)
    check_session_photos(session, photos, settings)
    prepare_folder(session, None, 64, workers=1)
    update_state(session, fingerprint={"training": "started"})
    name = sorted(p.name for p in photos.iterdir())[0]
    original = session.read_bytes(f"photos/{name}")
    session.write_bytes(f"photos/{name}", (photos / sorted(p.name for p in photos.iterdir())[1]).read_bytes())

    with pytest.raises(DatasetError) as caught:
        check_session_photos(session, None, settings)
    message = str(caught.value)
    assert f"photos/{name} in session 's' changed (or went missing) after training started" in message
    assert "--photos and the folder the session was started with" in message
    assert "--session NEW_NAME" in message

    # The first choice: the folder it started with puts the original back.
    _, photo_set = check_session_photos(session, photos, settings)
    assert session.read_bytes(f"photos/{name}") == original
    assert photo_set.files == load_state(session).photos
