"""Photos, sub-folders of photos and caption files are copied into the session as given."""

import hashlib

from PIL import Image
from sessions import opened_session

from dreambooth_core.photos.originals import import_photos


def test_subject_folders_and_caption_files_are_imported(tmp_path):
    photos = tmp_path / "photos"
    for name in ("shrk (1).jpg", "ohwx/a.png", "ohwx/b.png"):
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), "red").save(photos / name)
    (photos / "ohwx" / "a.txt").write_text("a dog on the grass")
    (photos / "notes.txt").write_text("not a caption: no photo is called notes")
    (photos / "ohwx" / "deeper").mkdir()
    (photos / "ohwx" / "deeper" / "c.png").write_bytes((photos / "ohwx" / "a.png").read_bytes())

    hashes = import_photos(opened_session(tmp_path / "sessions"), photos).files

    assert sorted(hashes) == ["ohwx/a.png", "ohwx/a.txt", "ohwx/b.png", "shrk (1).jpg"]
    for name, sha in hashes.items():
        copy = tmp_path / "sessions" / "s" / "photos" / name
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == sha == \
            hashlib.sha256((photos / name).read_bytes()).hexdigest()
