"""A folder of the user's own class images, checked and prepared like the photos.

Images at the top of the folder serve every subject; a sub-folder named after a
subject's token serves that subject alone. Each image gets the photo checks
(decodable, still, a safe name, big enough) without the face checks, and is
cropped square around its largest face and resized like a training photo.
Prepared images are kept in the class-image store, named after their content
and resolution, so a rerun prepares nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from pathlib import PurePosixPath

from dreambooth_core.errors import DatasetError
from dreambooth_core.generation.class_store import prepared_name
from dreambooth_core.photos.buckets import Size
from dreambooth_core.photos.checks import check_photo
from dreambooth_core.photos.crop import prepare_photo
from dreambooth_core.photos.originals import IMAGE_EXTENSIONS, folder_files, photo_source
from dreambooth_core.photos.prepare import method
from dreambooth_core.session.folder import Session


def prepare_own_images(store: Session, folder: str, subjects: list[str], resolution: int,
                       log: logging.Logger, size: Size | None = None) -> dict[str, list[str]]:
    """{subject: prepared images in the store}; every unusable file is reported at once. `size`:
    (width, height) of an aspect-ratio bucket to crop them to (around the face), else squares."""
    images = _images_by_subject(folder, subjects)
    problems: list[str] = []
    warnings: Counter[str] = Counter()
    prepared: dict[str, str] = {}
    for name, read in sorted({n: r for named in images.values() for n, r in named.items()}.items()):
        data = read()
        found = check_photo(name, data, resolution, IMAGE_EXTENSIONS).problems
        warnings.update(p.code for p in found if p.severity == "warning")
        errors = [p for p in found if p.severity == "error"]
        if errors:
            problems += [f"{name}: {p.message}. Fix: {p.fix}." for p in errors]
            continue
        target = prepared_name(hashlib.sha256(data).hexdigest(), list(size) if size else resolution, method())
        if not store.exists(target):
            store.write_bytes(target, prepare_photo(name, data, resolution, size=size).png)
        prepared[name] = target
    if problems:
        raise DatasetError(f"some images in the class images folder {folder!r} cannot be used:\n  "
                           + "\n  ".join(problems) + "\nRemove or replace them, or leave the class "
                           "images folder out to have class images generated.")
    log.info("Using %d class images of your own from %s%s", len(prepared), folder,
             "; warnings: " + ", ".join(f"{code} x{n}" for code, n in sorted(warnings.items()))
             if warnings else "")
    return {subject: [prepared[n] for n in sorted(named)] for subject, named in images.items()}


def _images_by_subject(folder: str, subjects: list[str]) -> dict[str, dict]:
    fs, root = photo_source(folder)
    try:
        found = fs.isdir(root)
    except Exception as exc:  # fsspec raises many types for one meaning
        raise DatasetError(f"cannot read the class images folder {folder!r}: {exc.__class__.__name__}: "
                           f"{exc}. Check the address and credentials.") from exc
    if not found:
        raise DatasetError(f"the class images folder {folder!r} does not exist or is not a folder. "
                           "Pass the folder that holds your class images, or leave it out to have "
                           "them generated.")
    tokens = {s.lower(): s for s in subjects}
    shared, own, problems = {}, defaultdict(dict), []
    for name, read in folder_files(folder).items():
        path = PurePosixPath(name.rstrip("/"))
        if name.endswith("/") or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue  # captions, notes, deeper folders: not class images
        if len(path.parts) == 1:
            shared[name] = read
        elif path.parts[0].lower() in tokens:
            own[tokens[path.parts[0].lower()]][name] = read
        else:
            problems.append(f"{path.parts[0]}/: a sub-folder that is not named after a subject's "
                            f"token ({', '.join(subjects)})")
    missing = [s for s in subjects if not own.get(s) and not shared]
    if missing:
        problems.append(f"no images for {', '.join(missing)}: put class images at the top of the "
                        "folder (for every subject) or in a sub-folder named after the token")
    if problems:
        raise DatasetError(f"the class images folder {folder!r} cannot be used:\n  "
                           + "\n  ".join(problems))
    return {s: own.get(s) or shared for s in subjects}
