"""The dataset report: every photo with its verdict, every problem with the file
name, what is wrong and what to do. Used by `dreambooth validate` and by the
flow's first task, before anything slow happens.

Verdicts: `error` (the set cannot be trained on until it is fixed), `warning`
(usable, results will likely suffer) or `ok` (notes about conversions included).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import unquote

from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, ConfigDict, Field

from tasks.captions.classes import class_word_for, parse_class_words
from tasks.captions.tokens import token_from_filename, token_from_folder
from tasks.dataset.checks import PhotoFacts, Problem, check_photo
from tasks.dataset.crop import open_image
from tasks.dataset.duplicates import find_near_duplicates
from tasks.dataset.photos import (IMAGE_EXTENSIONS, PHOTOS, open_folder, recorded_photos,
                                   uses_given_photos)
from tasks.errors import DatasetError
from tasks.session import Session

Verdict = Literal["ok", "warning", "error"]
REPORT_JSON, REPORT_MARKDOWN = "reports/dataset.json", "reports/dataset.md"
DEFAULT_RESOLUTION = 512
MIN_PHOTOS, RECOMMENDED_PHOTOS = 3, 10
RECOMMENDED_MIX = {"close-up": 60, "half-body": 25, "full-body": 15}
MIX_TOLERANCE = 20  # percentage points off the recommendation before a note is given
# Class words that mean the subject is a person: face checks apply.
PERSON_WORDS = frozenset(
    "person people man woman boy girl child kid baby toddler teen teenager guy lady gentleman "
    "male female human adult face portrait character actor actress model".split())
SEVERITY_ORDER = {"error": 0, "warning": 1, "note": 2}
# OpenCV's cascade object is shared and not safe to call from two threads at once.
_FACE_LOCK = threading.Lock()


def _find_faces_one_at_a_time(image):
    from tasks.dataset.faces import find_faces

    with _FACE_LOCK:
        return find_faces(image)


class ValidationSettings(BaseModel):
    """The parts of the configuration the checks depend on."""

    model_config = ConfigDict(frozen=True)
    resolution: int = DEFAULT_RESOLUTION
    resolution_from: str = "the default training resolution (512, SD 1.x)"
    token: str | None = None
    class_word: str | None = None
    subject_type: Literal["auto", "person", "other"] = "auto"
    allow_several_faces: bool = False


class PhotoReport(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    verdict: Verdict
    subject: str | None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    mode: str | None = None
    faces: int | None = None  # None: not counted (not a person, or not decodable)
    framing: str | None = None  # close-up / half-body / full-body, from the face's height
    sharpness: float | None = None
    brightness: float | None = None
    problems: list[Problem] = Field(default_factory=list)


class SubjectReport(BaseModel):
    model_config = ConfigDict(frozen=True)
    token: str
    class_word: str | None
    person: bool
    photos: int
    framing: dict[str, int] = Field(default_factory=dict)
    problems: list[Problem] = Field(default_factory=list)


class DatasetReport(BaseModel):
    model_config = ConfigDict(frozen=True)
    source: str
    resolution: int
    resolution_from: str
    usable: bool
    verdicts: dict[str, int]
    photos: list[PhotoReport]
    subjects: list[SubjectReport]
    ignored: dict[str, str]  # file -> why it is not a photo for training


def settings_from_config(config) -> ValidationSettings:
    """The checks run before the model is fetched, so a downloaded model's resolution is not
    known yet: --resolution when given, a built-in tiny model's own, a local diffusers
    folder's own (read from its configs), otherwise 512, the smallest resolution of the
    supported Stable Diffusion versions (no photo an SD 1.x model could use is refused; for
    SD 2.1-768 pass --resolution 768 to be warned about smaller photos)."""
    from tasks.model.tiny import tiny_resolution

    local = _local_model_resolution(config.model)
    if config.resolution:
        resolution, source = config.resolution, "--resolution"
    elif tiny_resolution(config.model):
        resolution, source = tiny_resolution(config.model), "the tiny model's resolution"
    elif local:
        resolution, source = local, "the local model's resolution"
    else:
        resolution, source = DEFAULT_RESOLUTION, ("512, the smallest resolution of Stable Diffusion "
                                                  "models; pass --resolution for another")
    return ValidationSettings(resolution=resolution, resolution_from=source, token=config.token,
                              class_word=config.class_word, subject_type=config.subject_type,
                              allow_several_faces=config.allow_several_faces)


def _local_model_resolution(model: str) -> int | None:
    """UNet sample size x VAE downscale of a local diffusers folder; None for anything else."""
    try:
        unet = json.loads((Path(model) / "unet" / "config.json").read_text())
        vae = json.loads((Path(model) / "vae" / "config.json").read_text())
        return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_person(class_word: str | None, subject_type: str) -> bool:
    """`auto`: a person when the class word says so, or when there is none (portraits are
    what DreamBooth is mostly used for); 'dog', 'style', 'car'... are not."""
    if subject_type != "auto":
        return subject_type == "person"
    return class_word is None or class_word.strip().lower() in PERSON_WORDS


Reader = Callable[[], bytes]


def folder_files(location: str | Path) -> dict[str, Reader]:
    """{name relative to the folder: reader} for files at the top and one sub-folder level
    down (one per subject), hidden names skipped. Deeper folders are listed as ignored.
    `location` is a local folder or any fsspec URL (gs://bucket/folder, memory://...)."""
    fs, root = open_folder(location)
    if not isinstance(fs, LocalFileSystem):
        return _remote_files(fs, root)
    folder = Path(root)
    files: dict[str, Reader] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        inside = sorted(entry.iterdir()) if entry.is_dir() else [entry]
        for file in inside:
            if file.name.startswith("."):
                continue
            name = _printable(file.relative_to(folder).as_posix() + ("/" if file.is_dir() else ""))
            files[name] = (lambda f=file: f.read_bytes()) if file.is_file() else (lambda: b"")
    return files


def _printable(name: str) -> str:
    """A name that is not valid UTF-8 (bytes Python keeps as surrogates) shown with \\xNN escapes,
    so the report can still be written; the name check then refuses it."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _remote_files(fs, root: str) -> dict[str, Reader]:
    files: dict[str, Reader] = {}

    def visible(folder: str) -> list[dict]:
        return sorted((e for e in fs.ls(folder, detail=True)
                       if not posixpath.basename(e["name"].rstrip("/")).startswith(".")),
                      key=lambda e: e["name"])

    for entry in visible(root):
        inside = visible(entry["name"]) if entry["type"] == "directory" else [entry]
        for item in inside:
            name = unquote(posixpath.relpath(item["name"].rstrip("/"), root))
            if item["type"] == "directory":
                files[name + "/"] = lambda: b""
            else:
                files[name] = lambda path=item["name"]: fs.cat_file(path)
    return files


def session_files(session: Session, names: list[str], place: str = "photos") -> dict[str, Reader]:
    return {name: (lambda n=name: session.read_bytes(f"{place}/{n}")) for name in names}


def validate_for_session(session: Session, folder: str | None, settings: ValidationSettings) -> DatasetReport:
    """Check the photos this run will use: the given folder before it is imported (so a fixed
    folder can simply be passed again), else the session's own copies."""
    if uses_given_photos(session, folder):
        return validate_folder(folder, settings)
    return validate_files(session_files(session, sorted(recorded_photos(session)), PHOTOS), settings,
                          f"session {session.name!r}")


def warning_lines(report: DatasetReport) -> list[str]:
    lines = [f"{photo.name}: {p.message}. Fix: {p.fix}." for photo in report.photos
             for p in photo.problems if p.severity == "warning"]
    return lines + [f"subject {subject.token!r}: {p.message}. Fix: {p.fix}." for subject in report.subjects
                    for p in subject.problems if p.severity == "warning"]


def validate_folder(folder: str | Path, settings: ValidationSettings) -> DatasetReport:
    return validate_files(folder_files(folder), settings, str(folder))


def validate_files(files: dict[str, Reader], settings: ValidationSettings, source: str) -> DatasetReport:
    """Check every photo, then the set: duplicates, counts and composition per subject."""
    photos, ignored = _sort_files(files)
    if not photos:
        raise DatasetError(f"no photos in {source!r}: expected image files "
                           f"({', '.join(sorted(IMAGE_EXTENSIONS))}). Add photos of your subject "
                           "named after its identifier, e.g. 'shrk (1).jpg'.")
    words = parse_class_words(settings.class_word)
    subjects = {name: _subject_of(name, settings.token) for name in photos}
    person = {s: is_person(class_word_for(s, words), settings.subject_type)
              for s in set(subjects.values()) if s}

    def check(name: str) -> tuple[PhotoFacts, str]:
        data = photos[name]()
        faces = _find_faces_one_at_a_time if person.get(subjects[name]) else None
        facts = check_photo(name, data, settings.resolution, IMAGE_EXTENSIONS, faces,
                            settings.allow_several_faces)
        return facts, hashlib.sha256(data).hexdigest()

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = dict(zip(photos, pool.map(check, photos)))
    facts = {name: f for name, (f, _) in results.items()}
    for name in photos:
        if not subjects[name]:
            facts[name].add("no-identifier", "error", "no identifier in the file name", "name photos "
                            "after the subject's identifier, e.g. 'shrk (1).jpg', or pass --token")
    _check_duplicates(facts, {name: digest for name, (_, digest) in results.items()})
    subject_reports = [_subject_report(token, class_word_for(token, words), person[token],
                                       [facts[n] for n in photos if subjects[n] == token])
                       for token in sorted(person)]
    photo_reports = [_photo_report(facts[name], subjects[name]) for name in photos]
    verdicts = Counter(p.verdict for p in photo_reports)
    usable = not verdicts["error"] and not any(p.severity == "error" for s in subject_reports
                                                for p in s.problems)
    return DatasetReport(source=source, resolution=settings.resolution,
                         resolution_from=settings.resolution_from, usable=usable,
                         verdicts={v: verdicts[v] for v in ("ok", "warning", "error")},
                         photos=photo_reports, subjects=subject_reports, ignored=ignored)


def _sort_files(files: dict[str, Reader]) -> tuple[dict[str, Reader], dict[str, str]]:
    """Photos to check, and the other files with the reason they are not photos."""
    photos, ignored = {}, {}
    stems = {str(PurePosixPath(n).with_suffix("")) for n in files
             if PurePosixPath(n).suffix.lower() != ".txt"}
    for name, read in files.items():
        suffix = PurePosixPath(name).suffix.lower()
        if name.endswith("/"):
            ignored[name] = "a folder inside a subject's folder: only one level of sub-folders is read"
        elif suffix in IMAGE_EXTENSIONS:
            photos[name] = read
        elif suffix == ".txt":
            if str(PurePosixPath(name).with_suffix("")) not in stems:
                ignored[name] = "a caption file without a photo of the same name"
        elif _is_image(read()):
            photos[name] = read  # an image training would skip: reported as an error
        else:
            ignored[name] = "not a photo (only image files and .txt captions are read)"
    return photos, ignored


def _is_image(data: bytes) -> bool:
    try:
        open_image(data)
    except Exception:  # noqa: BLE001 - anything that is not an accepted image header
        return False
    return True


def _subject_of(name: str, token: str | None) -> str | None:
    parts = PurePosixPath(name).parts
    try:
        found = token_from_folder(parts[0]) if len(parts) > 1 else token_from_filename(parts[0])
    except DatasetError:
        return token
    return token or found


def _check_duplicates(facts: dict[str, PhotoFacts], digests: dict[str, str]) -> None:
    first: dict[str, str] = {}
    exact = set()
    for name in sorted(facts):
        original = first.setdefault(digests[name], name)
        if original != name:
            exact.add(name)
            facts[name].add("duplicate", "warning", f"the same file as {original!r}",
                            "remove one of them: a repeated photo is learnt twice as strongly")
    images = {n: f.image for n, f in facts.items() if f.decoded and n not in exact}
    for original, copy, bits in find_near_duplicates(images):
        facts[copy].add("near-duplicate", "warning", f"a copy of {original!r} (resized, re-encoded "
                        f"or retouched: {bits} of 64 perceptual-hash bits differ)",
                        "remove one of them, or replace it with a different photo of the subject")


def _photo_report(facts: PhotoFacts, subject: str | None) -> PhotoReport:
    problems = sorted(facts.problems, key=lambda p: SEVERITY_ORDER[p.severity])
    severities = {p.severity for p in problems}
    verdict = "error" if "error" in severities else "warning" if "warning" in severities else "ok"
    return PhotoReport(name=facts.name, verdict=verdict, subject=subject, width=facts.width,
                       height=facts.height, format=facts.format, mode=facts.mode,
                       faces=None if facts.faces is None else len(facts.faces), framing=facts.framing,
                       sharpness=None if facts.sharpness is None else round(facts.sharpness, 1),
                       brightness=None if facts.brightness is None else round(facts.brightness, 1),
                       problems=problems)


def _subject_report(token: str, class_word: str | None, person: bool,
                    photos: list[PhotoFacts]) -> SubjectReport:
    problems = []
    count = len([p for p in photos if PurePosixPath(p.name).suffix.lower() in IMAGE_EXTENSIONS])
    if count < MIN_PHOTOS:
        problems.append(Problem(code="too-few-photos", severity="error", message=f"only {count} "
                                f"photo(s) of {token!r}: DreamBooth needs at least {MIN_PHOTOS}",
                                fix=f"add photos: {RECOMMENDED_PHOTOS} or more, with varied "
                                    "expressions, lighting and angles"))
    elif count < RECOMMENDED_PHOTOS:
        problems.append(Problem(code="few-photos", severity="warning", message=f"only {count} "
                                f"photos of {token!r}: {RECOMMENDED_PHOTOS} or more give "
                                "noticeably better results",
                                fix="add photos with varied expressions, lighting and angles"))
    framing = Counter(p.framing for p in photos if p.framing)
    shares = {kind: round(100 * framing[kind] / max(1, sum(framing.values())))
              for kind in RECOMMENDED_MIX}
    if person and framing:
        short = max(RECOMMENDED_MIX, key=lambda k: RECOMMENDED_MIX[k] - shares[k])
        if any(abs(shares[k] - RECOMMENDED_MIX[k]) > MIX_TOLERANCE for k in RECOMMENDED_MIX):
            mix = ", ".join(f"{k} {shares[k]}%" for k in RECOMMENDED_MIX)
            problems.append(Problem(code="composition-mix", severity="note", message=f"framing of "
                                    f"{token!r}: {mix}; recommended 60% close-up, 25% half-body, "
                                    "15% full-body (estimated from face size)",
                                    fix=f"add {short} photos for the model to learn more than one "
                                        "framing"))
    return SubjectReport(token=token, class_word=class_word, person=person, photos=count,
                         framing={k: framing[k] for k in RECOMMENDED_MIX} if person else {},
                         problems=problems)


def all_problems(report: DatasetReport) -> list[tuple[str, Problem]]:
    """(where, problem) for every problem, errors first."""
    found = [(p.name, problem) for p in report.photos for problem in p.problems]
    found += [(f"subject {s.token!r}", problem) for s in report.subjects for problem in s.problems]
    return sorted(found, key=lambda item: SEVERITY_ORDER[item[1].severity])


def dataset_error(report: DatasetReport) -> DatasetError | None:
    """One error that lists every error in the report, or None when the set is usable."""
    errors = [f"{where}: {p.message}. Fix: {p.fix}." for where, p in all_problems(report)
              if p.severity == "error"]
    if not errors:
        return None
    return DatasetError("the photos cannot be used yet (the full report is in "
                        f"{REPORT_MARKDOWN} of the session, or run dreambooth validate):\n  "
                        + "\n  ".join(errors))


def _photo_line(photo: PhotoReport) -> str:
    facts = [f"{photo.width}x{photo.height}" if photo.width else "", photo.format or ""]
    if photo.faces is not None:
        facts.append(f"{photo.faces} face{'s' if photo.faces != 1 else ''}")
    facts.append(photo.framing or "")
    return ", ".join(f for f in facts if f)


def summary_line(report: DatasetReport) -> str:
    counts = ", ".join(f"{n} {v}" for v, n in report.verdicts.items())
    errors = sum(p.severity == "error" for _, p in all_problems(report))
    state = "usable" if report.usable else f"NOT usable: fix the {errors} error{'s' * (errors != 1)}"
    return f"{len(report.photos)} photos ({counts}): {state}"


def report_text(report: DatasetReport) -> str:
    lines = [f"Photos in {report.source}, checked for training at {report.resolution} px "
             f"({report.resolution_from})", ""]
    for photo in report.photos:
        lines.append(f"  {photo.verdict:<8} {photo.name}  ({_photo_line(photo)})")
        lines += [f"             {p.severity} [{p.code}]: {p.message}. Fix: {p.fix}."
                  for p in photo.problems]
    lines.append("")
    for s in report.subjects:
        kind = "person" if s.person else "not a person: no face checks"
        mix = ", ".join(f"{k} {n}" for k, n in s.framing.items())
        lines.append(f"  subject {s.token}: {s.photos} photos ({kind}{'; ' + mix if mix else ''})")
        lines += [f"             {p.severity} [{p.code}]: {p.message}. Fix: {p.fix}." for p in s.problems]
    for name, why in report.ignored.items():
        lines.append(f"  ignored  {name}: {why}")
    return "\n".join(lines + ["", summary_line(report)]) + "\n"


def report_markdown(report: DatasetReport) -> str:
    lines = [f"# Dataset check: {summary_line(report)}", "",
             f"Checked for training at {report.resolution} px ({report.resolution_from}).", "",
             "| photo | verdict | size | faces | framing | problems |", "|---|---|---|---|---|---|"]
    for p in report.photos:
        size = f"{p.width}x{p.height}" if p.width else "-"
        faces = "-" if p.faces is None else str(p.faces)
        codes = ", ".join(f"{x.code} ({x.severity})" for x in p.problems) or "-"
        lines.append(f"| {_cell(p.name)} | **{p.verdict}** | {size} | {faces} | {p.framing or '-'} | {codes} |")
    lines += ["", "| subject | person | photos | close-up | half-body | full-body |", "|---|---|---|---|---|---|"]
    for s in report.subjects:
        mix = " | ".join(str(s.framing.get(k, "-")) for k in RECOMMENDED_MIX)
        lines.append(f"| {s.token} | {'yes' if s.person else 'no'} | {s.photos} | {mix} |")
    problems = all_problems(report)
    if problems:
        lines += ["", "## Problems", ""]
        lines += [f"- **{p.severity}** `{_code(where)}` ({p.code}): {p.message}. *Fix:* {p.fix}."
                  for where, p in problems]
    if report.ignored:
        lines += ["", "## Ignored files", ""] + [f"- `{n}`: {why}" for n, why in report.ignored.items()]
    return "\n".join(lines) + "\n"


def _code(text: str) -> str:
    return text.replace("`", "'")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def write_dataset_report(session: Session, report: DatasetReport) -> None:
    session.write_json(REPORT_JSON, report.model_dump())
    session.write_bytes(REPORT_MARKDOWN, report_markdown(report).encode())
