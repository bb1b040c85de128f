"""The dataset report: every photo with its verdict, every problem with the file
name, what is wrong and what to do. Used by `dreambooth validate` and by the
flow's first task, before anything slow happens.

Verdicts: `error` (the set cannot be trained on until it is fixed), `warning`
(usable, results will likely suffer) or `ok` (notes about conversions included).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dreambooth_core.captions.tokens import (
    PERSON_WORDS,
    class_word_for,
    parse_class_words,
    token_from_filename,
    token_from_folder,
)
from dreambooth_core.config import CaptionSettings, CheckSettings
from dreambooth_core.errors import DatasetError
from dreambooth_core.photos.checks import PhotoFacts, Problem, check_photo
from dreambooth_core.photos.crop import open_image
from dreambooth_core.photos.duplicates import find_near_duplicates
from dreambooth_core.photos.originals import (
    IMAGE_EXTENSIONS,
    MASK_SUFFIX,
    PhotoSet,
    Reader,
    checked_copies,
    folder_files,
    hashing_readers,
    import_files,
    import_names,
    is_mask,
    read_once,
    refuse_changed_photos,
    uses_given_photos,
)
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import DATASET_REPORT_JSON, DATASET_REPORT_MARKDOWN, PHOTOS
from dreambooth_core.session.state import load_state

Verdict = Literal["ok", "warning", "error"]
MIN_PHOTOS, RECOMMENDED_PHOTOS = 3, 10
RECOMMENDED_MIX = {"close-up": 60, "half-body": 25, "full-body": 15}
MIX_TOLERANCE = 20  # percentage points off the recommendation before a note is given
SEVERITY_ORDER = {"error": 0, "warning": 1, "note": 2}
# OpenCV's cascade object is shared and not safe to call from two threads at once.
_FACE_LOCK = threading.Lock()


def _find_faces_one_at_a_time(image):
    from dreambooth_core.photos.faces import find_faces

    with _FACE_LOCK:
        return find_faces(image)


class ValidationSettings(BaseModel):
    """What the checks depend on: the resolution sizes are judged against, and the settings
    of the captions and checks sections that name the subjects and their kind."""

    model_config = ConfigDict(frozen=True)
    resolution: int
    resolution_from: str = Field("--resolution",
                                 description="Where the resolution came from, for the report.")
    token: str | None = None
    class_word: str | None = None
    subject_type: Literal["auto", "person", "other"] = "auto"
    allow_several_faces: bool = False

    @classmethod
    def of(cls, captions: CaptionSettings, checks: CheckSettings, resolution: int,
           resolution_from: str) -> ValidationSettings:
        return cls(resolution=resolution, resolution_from=resolution_from, token=captions.token,
                   class_word=captions.class_word, subject_type=checks.subject_type,
                   allow_several_faces=checks.allow_several_faces)


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


class SubjectPhotos(BaseModel):
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
    subjects: list[SubjectPhotos]
    ignored: dict[str, str]  # file -> why it is not a photo for training


def is_person(class_word: str | None, subject_type: str) -> bool:
    """`auto`: a person when the class word says so, or when there is none (portraits are
    what DreamBooth is mostly used for); 'dog', 'style', 'car'... are not."""
    if subject_type != "auto":
        return subject_type == "person"
    return class_word is None or class_word.strip().lower() in PERSON_WORDS


def session_files(session: Session, names: list[str]) -> dict[str, Reader]:
    return {name: (lambda n=name: session.read_bytes(f"{PHOTOS}/{n}")) for name in names}


def check_session_photos(session: Session, folder: str | None, settings: ValidationSettings,
                         log: logging.Logger | None = None) -> tuple[DatasetReport, PhotoSet | None]:
    """Check the photos this run will use, each read once: the given folder, imported into the
    session when it is usable (so a fixed folder can simply be passed again), else the session's
    own copies, which must still be the photos recorded (checked_copies). Returns the report and
    the session's photo set (None when not usable)."""
    state = load_state(session)
    if uses_given_photos(state, folder):
        listed = folder_files(folder)
        files = read_once(listed, keep=import_names(listed))
        report = validate_files(files, settings, str(folder))
        return report, import_files(session, files, str(folder)) if report.usable else None
    originals = refuse_changed_photos(session, state, folder)
    copies, hashes = hashing_readers(session_files(session, sorted(state.photos)))
    report = validate_files(copies, settings, f"session {session.name!r}")
    if not report.usable:
        return report, None
    return report, checked_copies(session, state, copies, hashes, originals,
                                  log or logging.getLogger("dreambooth"))


def warning_lines(report: DatasetReport) -> list[str]:
    lines = [f"{photo.name}: {p.message}. Fix: {p.fix}." for photo in report.photos
             for p in photo.problems if p.severity == "warning"]
    return lines + [f"subject {subject.token!r}: {p.message}. Fix: {p.fix}." for subject in report.subjects
                    for p in subject.problems if p.severity == "warning"]


def validate_folder(folder: str | Path, settings: ValidationSettings) -> DatasetReport:
    return validate_files(folder_files(folder), settings, str(folder))


def validate_files(files: dict[str, Reader], settings: ValidationSettings,
                   source: str) -> DatasetReport:
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

    def check(name: str) -> tuple[PhotoFacts, str | None]:
        try:
            data = photos[name]()
        except OSError as exc:  # permission denied, a file that vanished: named, not a traceback
            return _unreadable(name, exc), None
        faces = _find_faces_one_at_a_time if person.get(subjects[name]) else None
        facts = check_photo(name, data, settings.resolution, IMAGE_EXTENSIONS, faces,
                            settings.allow_several_faces)
        return facts, hashlib.sha256(data).hexdigest()

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = dict(zip(photos, pool.map(check, photos)))
    facts = {name: f for name, (f, _) in results.items()}
    for name in photos:
        if not subjects[name]:
            facts[name].add("no-identifier", "error", "no identifier in the file name",
                            "name photos "
                            "after the subject's identifier, e.g. 'shrk (1).jpg', or pass --token")
    _check_duplicates(facts, {name: digest for name, (_, digest) in results.items() if digest})
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


def _unreadable(name: str, exc: OSError) -> PhotoFacts:
    facts = PhotoFacts(name=name)
    facts.add("unreadable", "error", f"the file cannot be read ({exc.strerror or exc})",
              "make it readable by this user (chmod a+r), or remove it from the folder")
    return facts


def _sort_files(files: dict[str, Reader]) -> tuple[dict[str, Reader], dict[str, str]]:
    """Photos to check, and the other files with the reason they are not photos."""
    photos, ignored = {}, {}
    stems = {str(PurePosixPath(n).with_suffix("")) for n in files
             if PurePosixPath(n).suffix.lower() != ".txt"}
    for name, read in files.items():
        suffix = PurePosixPath(name).suffix.lower()
        if name.endswith("/"):
            ignored[name] = "a folder inside a subject's folder: only one level of sub-folders is read"
        elif is_mask(name):  # read with its photo, by --masked-loss
            if name[:-len(MASK_SUFFIX)] not in stems:
                ignored[name] = "a subject mask without a photo of the same name"
        elif suffix in IMAGE_EXTENSIONS:
            photos[name] = read
        elif suffix == ".txt":
            if str(PurePosixPath(name).with_suffix("")) not in stems:
                ignored[name] = "a caption file without a photo of the same name"
        elif _is_image(_read_or_empty(read)):
            photos[name] = read  # an image training would skip: reported as an error
        else:
            ignored[name] = "not a photo (only image files and .txt captions are read)"
    return photos, ignored


def _read_or_empty(read: Reader) -> bytes:
    try:
        return read()
    except OSError:
        return b""  # a file that is not named as a photo and cannot be read is not one


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
    for name in sorted(digests):
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
                       faces=None if facts.faces is None else len(facts.faces),
                       framing=facts.framing,
                       sharpness=None if facts.sharpness is None else round(facts.sharpness, 1),
                       brightness=None if facts.brightness is None else round(facts.brightness, 1),
                       problems=problems)


def _subject_report(token: str, class_word: str | None, person: bool,
                    photos: list[PhotoFacts]) -> SubjectPhotos:
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
    return SubjectPhotos(token=token, class_word=class_word, person=person, photos=count,
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
                        f"{DATASET_REPORT_MARKDOWN} of the session, or run dreambooth validate):\n  "
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
        lines.append(f"| {_cell(p.name)} | **{p.verdict}** | {size} | {faces} | {p.framing or '-'} "
                     f"| {codes} |")
    lines += ["", "| subject | person | photos | close-up | half-body | full-body |",
              "|---|---|---|---|---|---|"]
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
    session.write_json(DATASET_REPORT_JSON, report.model_dump())
    session.write_bytes(DATASET_REPORT_MARKDOWN, report_markdown(report).encode())
