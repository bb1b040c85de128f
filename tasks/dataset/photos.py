"""The user's original photos: finding them and copying them, untouched, into the session."""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

from tasks.config import digest
from tasks.errors import DatasetError
from tasks.session import Session
from tasks.session_state import read_state, update_state

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
PHOTOS = "photos"


def is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def find_photos(folder: Path) -> list[Path]:
    """Image files directly inside `folder` or in its sub-folders (one per subject), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"photos folder {str(folder)!r} does not exist or is not a folder. "
                           "Pass --photos with the folder that holds your subject's photos.")
    places = [folder] + sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    photos = sorted(p for place in places for p in place.iterdir() if p.is_file() and is_image(p.name))
    if not photos:
        raise DatasetError(f"no photos in {str(folder)!r}: expected image files "
                           f"({', '.join(sorted(IMAGE_EXTENSIONS))}). Add photos of your subject "
                           "named after its identifier, e.g. 'shrk (1).jpg'.")
    return photos


def find_inputs(folder: Path) -> list[Path]:
    """The photos and, for those that have one, their caption file ('shrk (1).txt')."""
    photos = find_photos(folder)
    captions = [p.with_suffix(".txt") for p in photos if p.with_suffix(".txt").is_file()]
    return sorted(photos + captions)


def hash_files(files: list[Path], folder: Path) -> dict[str, str]:
    """{path relative to folder: sha256}."""
    return {f.relative_to(folder).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def recorded_photos(session: Session) -> dict[str, str]:
    """{name: sha256} of a completed import; empty before one."""
    return (read_state(session) or {}).get("photos", {})


def check_photos(session: Session, folder: Path | None) -> None:
    """Before anything slow: a new session needs readable photos; an old one keeps its own."""
    stored = recorded_photos(session)
    if not stored and folder is None:
        raise DatasetError(f"session {session.name!r} has no photos yet. Pass --photos with the "
                           "folder that holds your subject's photos.")
    if folder is None or (stored and not Path(folder).exists()):
        return  # resuming, perhaps on another machine: the session has its own copies
    given = hash_files(find_inputs(folder), Path(folder))
    if stored and stored != given:
        raise DatasetError(
            f"the photos in {str(folder)!r} differ from those session {session.name!r} was "
            "started with. Run without --photos to continue the session, or choose a new "
            "--session name for the new photos.")


def import_photos(session: Session, folder: Path | None) -> dict[str, str]:
    """Copy originals (and caption files) into the session, recording them only once all are copied."""
    stored = recorded_photos(session)
    if stored:
        return stored
    check_photos(session, folder)
    files = find_inputs(folder)
    hashes = hash_files(files, Path(folder))
    for place in sorted({PurePosixPath(PHOTOS, name).parent for name in hashes}):
        session.remove_temporary(str(place))
    for file, name in zip(files, hashes):
        session.put_file(file, f"{PHOTOS}/{name}")
    update_state(session, photos=hashes)
    return hashes


def photos_digest(hashes: dict[str, str]) -> str:
    return digest(sorted(hashes.items()))
