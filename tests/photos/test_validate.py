"""Every kind of bad photo gets the exact verdict and reason; good ones pass untouched.

All files are generated here; real faces come from scikit-image's public-domain photos."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage import data

from dreambooth_core.errors import DatasetError
from dreambooth_core.photos.checks import safe_name
from dreambooth_core.photos.duplicates import dhash, distance, find_near_duplicates, phash
from dreambooth_core.photos.validate import (
    DatasetReport,
    ValidationSettings,
    dataset_error,
    is_person,
    report_markdown,
    report_text,
    validate_files,
    validate_folder,
)

RESOLUTION = 128


def pattern(seed: int, size: tuple[int, int] = (256, 256), scale: float = 1.0) -> Image.Image:
    """A sharp, mid-grey-on-average picture, different for every seed."""
    blocks = np.random.default_rng(seed).integers(0, 256, (16, 16, 3)).astype(np.float64) * scale
    return Image.fromarray(blocks.astype(np.uint8)).resize(size, Image.Resampling.NEAREST)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size; the pixel data is never there."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def animated_gif() -> bytes:
    frames = [pattern(40 + i).convert("P") for i in range(3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def rotated_jpeg() -> bytes:
    wide = pattern(50, (256, 160))
    exif = wide.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    return encode(wide, "JPEG", quality=95, exif=exif)


def truncated_jpeg() -> bytes:
    whole = encode(pattern(10), "JPEG", quality=95)
    return whole[: len(whole) // 2]


def bad_files() -> dict[str, bytes]:
    good2 = pattern(2)
    blown = np.asarray(pattern(60)).copy()
    blown[:, :160] = 255
    sixteen = (np.asarray(pattern(30).convert("L"), dtype=np.uint16) * 257)
    return {
        "good (1).png": encode(pattern(1), "PNG"),
        "good (2).jpg": encode(good2, "JPEG", quality=95),
        "good (3).webp": encode(pattern(3), "WEBP", quality=95),
        "good (1).txt": b"a caption",
        "truncated.jpg": truncated_jpeg(),
        "cmyk.jpg": encode(pattern(11).convert("CMYK"), "JPEG", quality=95),
        "sixteen.png": encode(Image.fromarray(sixteen.astype("<u2")), "PNG"),
        "palette.png": encode(pattern(12).convert("P"), "PNG"),
        "alpha.png": encode(pattern(13).convert("RGBA"), "PNG"),
        "animated.gif": animated_gif(),
        "text.jpg": b"this is not a photo\n",
        "tiny.png": encode(pattern(14, (40, 40)), "PNG"),
        "small.png": encode(pattern(15, (100, 100)), "PNG"),
        "same file.png": encode(pattern(1), "PNG"),
        "resized copy.jpg": encode(good2.resize((200, 200), Image.Resampling.LANCZOS), "JPEG", quality=70),
        "bomb.png": png_declaring(100_000, 100_000),
        "wrong.jpg": encode(pattern(16), "PNG"),
        "rotated.jpg": rotated_jpeg(),
        "blurry.png": encode(pattern(17).filter(ImageFilter.GaussianBlur(8)), "PNG"),
        "dark.png": encode(pattern(18, scale=0.15), "PNG"),
        "bright.png": encode(Image.fromarray(blown), "PNG"),
        "wide.png": encode(pattern(19, (600, 150)), "PNG"),
        "bad?name.png": encode(pattern(20), "PNG"),
        "notes.pdf": b"%PDF-1.4 not a photo",
        "orphan.txt": b"a caption without its photo",
    }


# file -> (verdict, {problem code: severity})
EXPECTED = {
    "good (1).png": ("ok", {}),
    "good (2).jpg": ("ok", {}),
    "good (3).webp": ("ok", {}),
    "truncated.jpg": ("error", {"truncated": "error"}),
    "cmyk.jpg": ("ok", {"cmyk": "note"}),
    "sixteen.png": ("ok", {"16-bit": "note"}),
    "palette.png": ("ok", {"palette": "note"}),
    "alpha.png": ("ok", {"alpha": "note"}),
    "animated.gif": ("error", {"animated": "error", "extension-not-used": "error", "palette": "note"}),
    "text.jpg": ("error", {"not-an-image": "error"}),
    "tiny.png": ("error", {"too-small": "error"}),
    "small.png": ("warning", {"small": "warning"}),
    "same file.png": ("warning", {"duplicate": "warning"}),
    "resized copy.jpg": ("warning", {"near-duplicate": "warning"}),
    "bomb.png": ("error", {"decompression-bomb": "error"}),
    "wrong.jpg": ("warning", {"wrong-extension": "warning"}),
    "rotated.jpg": ("ok", {"exif-orientation": "note"}),
    "blurry.png": ("warning", {"blurry": "warning"}),
    "dark.png": ("warning", {"dark": "warning"}),
    "bright.png": ("warning", {"blown-out": "warning"}),
    "wide.png": ("warning", {"extreme-aspect": "warning"}),
    "bad?name.png": ("error", {"unsafe-name": "error"}),
}


@pytest.fixture(scope="module")
def bad_set(tmp_path_factory) -> tuple[Path, DatasetReport]:
    folder = tmp_path_factory.mktemp("bad") / "photos"
    folder.mkdir()
    for name, content in bad_files().items():
        (folder / name).write_bytes(content)
    settings = ValidationSettings(resolution=RESOLUTION, token="shrk", subject_type="other")
    return folder, validate_folder(folder, settings)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_file_gets_its_verdict_and_reason(bad_set, name):
    _, report = bad_set
    photo = next(p for p in report.photos if p.name == name)
    verdict, problems = EXPECTED[name]
    assert (photo.verdict, {p.code: p.severity for p in photo.problems}) == (verdict, problems)
    for problem in photo.problems:
        assert problem.message and problem.fix


def test_every_photo_is_listed_and_other_files_are_ignored_with_a_reason(bad_set):
    _, report = bad_set
    assert sorted(p.name for p in report.photos) == sorted(EXPECTED)
    assert sorted(report.ignored) == ["notes.pdf", "orphan.txt"]
    assert report.verdicts == {"ok": 8, "warning": 8, "error": 6}
    assert not report.usable


def test_messages_say_what_is_wrong_and_what_to_do(bad_set):
    _, report = bad_set
    problems = {p.name: p.problems[0] for p in report.photos if p.problems}
    assert "cannot be read as an image" in problems["text.jpg"].message
    assert "cut short" in problems["truncated.jpg"].message
    assert "10000 megapixels" in problems["bomb.png"].message
    assert "decompression bomb" in problems["bomb.png"].message
    assert "'good (1).png'" in problems["same file.png"].message
    assert "'good (2).jpg'" in problems["resized copy.jpg"].message
    assert "a PNG image named '.jpg'" in problems["wrong.jpg"].message
    assert "'.png'" in problems["wrong.jpg"].fix
    assert "'bad_name.png'" in problems["bad?name.png"].fix
    assert "40x40" in problems["tiny.png"].message and "128x128" in problems["tiny.png"].fix


def test_exif_orientation_is_applied_before_measuring(bad_set):
    _, report = bad_set
    rotated = next(p for p in report.photos if p.name == "rotated.jpg")
    assert (rotated.width, rotated.height) == (160, 256)


def test_one_error_lists_every_unusable_file(bad_set):
    _, report = bad_set
    error = dataset_error(report)
    assert isinstance(error, DatasetError)
    text = str(error)
    for name, (verdict, _) in EXPECTED.items():
        assert (f"\n  {name}: " in text) == (verdict == "error"), name
    assert "Fix:" in text


def test_text_and_markdown_reports_name_every_photo(bad_set):
    _, report = bad_set
    text, markdown = report_text(report), report_markdown(report)
    for name in EXPECTED:
        assert name in text and name in markdown
    assert "NOT usable" in text
    assert "| truncated.jpg | **error** |" in markdown


def test_the_originals_are_not_modified(bad_set):
    folder, _ = bad_set
    files = bad_files()
    for name in EXPECTED:
        assert (folder / name).read_bytes() == files[name], name


# --- faces -------------------------------------------------------------------------------

def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


def two_people() -> Image.Image:
    both = Image.new("RGB", (1024, 512))
    both.paste(astronaut(), (0, 0))
    both.paste(astronaut().transpose(Image.Transpose.FLIP_LEFT_RIGHT), (512, 0))
    return both


def readers(images: dict[str, Image.Image]) -> dict:
    encoded = {name: encode(image, "PNG") for name, image in images.items()}
    return {name: (lambda b=b: b) for name, b in encoded.items()}


@pytest.fixture(scope="module")
def face_photos() -> dict:
    return readers({"shrk (1).png": astronaut(), "shrk (2).png": two_people(),
                    "shrk (3).png": Image.fromarray(data.coffee())})


def verdicts(report: DatasetReport) -> dict[str, tuple[str, dict[str, str], int | None]]:
    return {p.name: (p.verdict, {x.code: x.severity for x in p.problems}, p.faces)
            for p in report.photos}


def test_face_count_of_a_person(face_photos):
    report = validate_files(face_photos, ValidationSettings(resolution=RESOLUTION), "faces")
    assert verdicts(report) == {
        "shrk (1).png": ("ok", {}, 1),
        "shrk (2).png": ("error", {"several-faces": "error"}, 2),
        "shrk (3).png": ("warning", {"no-face": "warning"}, 0),
    }
    assert "--allow-several-faces" in str(dataset_error(report))


def test_several_faces_can_be_allowed(face_photos):
    settings = ValidationSettings(resolution=RESOLUTION, allow_several_faces=True)
    report = validate_files(face_photos, settings, "faces")
    assert verdicts(report)["shrk (2).png"] == ("ok", {"several-faces": "note"}, 2)
    assert report.usable


def test_no_face_checks_for_a_dog(face_photos):
    report = validate_files(face_photos, ValidationSettings(resolution=RESOLUTION, class_word="dog"),
                            "faces")
    assert all(v == ("ok", {}, None) for v in verdicts(report).values())
    assert not report.subjects[0].person and report.subjects[0].framing == {}


@pytest.mark.parametrize("word, subject_type, person", [
    (None, "auto", True), ("man", "auto", True), ("Woman", "auto", True), ("dog", "auto", False),
    ("style", "auto", False), ("dog", "person", True), ("man", "other", False)])
def test_which_subjects_are_people(word, subject_type, person):
    assert is_person(word, subject_type) is person


def test_framing_mix_is_compared_with_the_recommendation():
    close_ups = readers({f"shrk ({i}).png": astronaut().crop((120 + i, 20, 330 + i, 230))
                         for i in range(3)})
    report = validate_files(close_ups, ValidationSettings(resolution=64), "framing")
    subject = report.subjects[0]
    assert [p.framing for p in report.photos] == ["close-up"] * 3
    assert subject.framing == {"close-up": 3, "half-body": 0, "full-body": 0}
    mix = next(p for p in subject.problems if p.code == "composition-mix")
    assert mix.severity == "note" and "close-up 100%" in mix.message and "half-body" in mix.fix


# --- photo counts per subject -----------------------------------------------------------

@pytest.mark.parametrize("count, problems", [
    (2, {"too-few-photos": "error"}), (3, {"few-photos": "warning"}), (9, {"few-photos": "warning"}),
    (10, {})])
def test_photo_count_per_subject(count, problems):
    files = readers({f"shrk ({i}).png": pattern(100 + i, (64, 64)) for i in range(count)})
    files.update(readers({f"ohwx ({i}).png": pattern(200 + i, (64, 64)) for i in range(10)}))
    report = validate_files(files, ValidationSettings(resolution=64, subject_type="other"), "count")
    by_token = {s.token: {p.code: p.severity for p in s.problems} for s in report.subjects}
    assert by_token == {"shrk": problems, "ohwx": {}}
    assert report.usable is (count >= 3)


def test_sub_folders_are_subjects(tmp_path):
    for token, seed in (("shrk", 300), ("ohwx", 400)):
        (tmp_path / token).mkdir()
        for i in range(3):
            pattern(seed + i, (64, 64)).save(tmp_path / token / f"IMG_{i}.png")
    (tmp_path / "shrk" / "deeper").mkdir()
    report = validate_folder(tmp_path, ValidationSettings(resolution=64, subject_type="other"))
    assert [s.token for s in report.subjects] == ["ohwx", "shrk"]
    assert {p.subject for p in report.photos if p.name.startswith("ohwx/")} == {"ohwx"}
    assert list(report.ignored) == ["shrk/deeper/"]


def test_missing_folder_and_empty_folder_are_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        validate_folder(tmp_path / "nope", ValidationSettings(resolution=512))
    (tmp_path / "notes.txt").write_text("no photos here")
    with pytest.raises(DatasetError, match="no photos in"):
        validate_folder(tmp_path, ValidationSettings(resolution=512))


# --- perceptual hashes ------------------------------------------------------------------

def test_resized_and_reencoded_copies_hash_alike_but_different_photos_do_not():
    original = astronaut()
    copy = Image.open(io.BytesIO(encode(original.resize((300, 300)), "JPEG", quality=60)))
    other = Image.fromarray(data.coffee())
    for hash_of in (dhash, phash):
        assert distance(hash_of(original), hash_of(copy)) <= 4
        assert distance(hash_of(original), hash_of(other)) > 16
    assert find_near_duplicates({"a": original, "b": copy, "c": other}) == [
        ("a", "b", max(distance(dhash(original), dhash(copy)), distance(phash(original), phash(copy))))]


@pytest.mark.parametrize("name, safe", [("bad?name.jpg", "bad_name.jpg"), ("a\nb.PNG", "a_b.png"),
                                        ("ok (1).jpg", "ok (1).jpg")])
def test_safe_name_suggestion(name, safe):
    assert safe_name(name) == safe


def test_photos_from_an_fsspec_url():
    import fsspec

    fs = fsspec.filesystem("memory")
    for i in range(3):
        fs.pipe(f"/validate-url/shrk ({i}).png", encode(pattern(500 + i, (64, 64)), "PNG"))
    fs.pipe("/validate-url/shrk (3).jpg", b"not a photo")
    try:
        report = validate_folder("memory://validate-url", ValidationSettings(resolution=64,
                                                                              subject_type="other"))
    finally:
        fs.rm("/validate-url", recursive=True)
    assert [(p.name, p.verdict) for p in report.photos] == [
        ("shrk (0).png", "ok"), ("shrk (1).png", "ok"), ("shrk (2).png", "ok"), ("shrk (3).jpg", "error")]


def test_a_file_name_that_is_not_utf8_is_refused(tmp_path):
    for i in range(3):
        pattern(600 + i, (64, 64)).save(tmp_path / f"shrk ({i}).png")
    with open(bytes(tmp_path) + b"/shrk (3)\xff.png", "wb") as f:
        f.write(encode(pattern(603, (64, 64)), "PNG"))
    report = validate_folder(tmp_path, ValidationSettings(resolution=64, subject_type="other"))
    bad = report.photos[-1]
    assert bad.name == "shrk (3)\\xff.png" and bad.verdict == "error"
    assert [(p.code, p.fix) for p in bad.problems] == [("unsafe-name", "rename it, e.g. to 'shrk (3).png'")]
    assert "not valid UTF-8" in report_markdown(report).encode().decode()


def test_resolution_checked_in_the_flow(tmp_path):
    """The check runs before the model is fetched: the resolution comes from what is known then."""
    from dreambooth_core.config import DreamBoothConfig
    from dreambooth_core.families import write_config_folder
    from dreambooth_core.families.expected import expected_resolution

    def resolution(**fields) -> int:
        config = DreamBoothConfig(session="s", **fields)
        return expected_resolution(config.base_model.model, config.training.resolution)[0]

    write_config_folder("sd21-768-v", tmp_path)  # a local diffusers folder of a 768 px model (configs)
    assert resolution() == 512
    assert resolution(model="tiny") == 64
    assert resolution(model=str(tmp_path)) == 768
    assert resolution(model="tiny", resolution=256) == 256
    config = DreamBoothConfig(session="s", class_word="dog", subject_type="person", allow_several_faces=True,
                              token="ohwx")
    settings = ValidationSettings.of(config.captions, config.checks, 512, "the default")
    assert (settings.class_word, settings.subject_type, settings.allow_several_faces, settings.token) == (
        "dog", "person", True, "ohwx")
