"""The user's original photos: finding them and copying them, untouched, into the session.

The photos folder may be local or any fsspec URL (gs://bucket/folder, memory://...)."""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

import fsspec
from fsspec.implementations.local import LocalFileSystem

from tasks.config import digest
from tasks.errors import DatasetError
from tasks.session import Session
from tasks.session_state import read_state, update_state

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
PHOTOS = "photos"


def is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def photo_source(location: str | Path) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and root of a photos folder: a local path or any fsspec URL
    (gs://bucket/folder, memory://folder, https://... with aiohttp installed)."""
    fs, root = fsspec.core.url_to_fs(str(location))
    return fs, root.rstrip("/") or root


def is_local(location: str | Path) -> bool:
    return isinstance(photo_source(location)[0], LocalFileSystem)


def entry_name(path: str) -> str:
    """A listed file's own name; HTTP listings give it URL-quoted ('shrk%20%281%29.jpg')."""
    return unquote(posixpath.basename(path.rstrip("/")))


def open_folder(location: str | Path) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and root of a photos folder that exists, or a DatasetError saying why not."""
    fs, root = photo_source(location)
    try:
        found = fs.isdir(root)
    except Exception as exc:  # fsspec raises many types for one meaning
        raise DatasetError(f"cannot read photos folder {str(location)!r}: {exc.__class__.__name__}: "
                           f"{exc}. Check the address and credentials, or pass a local --photos "
                           "folder.") from exc
    if not found:
        raise DatasetError(f"photos folder {str(location)!r} does not exist or is not a folder. "
                           "Pass --photos with the folder that holds your subject's photos.")
    return fs, root


def _listing(location: str | Path) -> tuple[fsspec.AbstractFileSystem, str, dict[str, str]]:
    """{name relative to the folder: path in fs} for every file directly inside the folder or
    in one of its sub-folders (one per subject); hidden entries are skipped."""
    fs, root = open_folder(location)

    def entries(folder: str) -> list[dict]:
        fs.invalidate_cache(folder)
        return [e for e in fs.ls(folder, detail=True)
                if not posixpath.basename(e["name"].rstrip("/")).startswith(".")]

    files = {}
    for entry in entries(root):
        name = entry_name(entry["name"])
        if entry["type"] == "directory":
            files.update({f"{name}/{entry_name(e['name'])}": e["name"]
                          for e in entries(entry["name"]) if e["type"] == "file"})
        elif entry["type"] == "file":
            files[name] = entry["name"]
    return fs, root, files


def _inputs(location: str | Path) -> tuple[fsspec.AbstractFileSystem, dict[str, str]]:
    """The photos and, for those that have one, their caption file ('shrk (1).txt'), sorted."""
    fs, _, files = _listing(location)
    photos = sorted(name for name in files if is_image(name))
    if not photos:
        raise DatasetError(f"no photos in {str(location)!r}: expected image files "
                           f"({', '.join(sorted(IMAGE_EXTENSIONS))}). Add photos of your subject "
                           "named after its identifier, e.g. 'shrk (1).jpg'.")
    captions = [c for c in (str(PurePosixPath(p).with_suffix(".txt")) for p in photos) if c in files]
    return fs, {name: files[name] for name in sorted(photos + captions)}


def find_photos(folder: str | Path) -> list[Path] | list[str]:
    """Image files directly inside `folder` or in its sub-folders (one per subject), sorted.

    Local folders give Paths; fsspec URLs give the files' URLs."""
    fs, files = _inputs(folder)
    found = [path for name, path in files.items() if is_image(name)]
    return [Path(p) for p in found] if isinstance(fs, LocalFileSystem) else [fs.unstrip_protocol(p) for p in found]


def find_inputs(folder: str | Path) -> list[Path] | list[str]:
    """The photos and, for those that have one, their caption file ('shrk (1).txt')."""
    fs, files = _inputs(folder)
    found = list(files.values())
    return [Path(p) for p in found] if isinstance(fs, LocalFileSystem) else [fs.unstrip_protocol(p) for p in found]


def read_inputs(folder: str | Path) -> Iterator[tuple[str, bytes]]:
    """(name relative to the folder, content) of every photo and caption file, sorted by name."""
    fs, files = _inputs(folder)
    for name, path in files.items():
        yield name, fs.cat_file(path)


def hash_inputs(folder: str | Path) -> dict[str, str]:
    """{name relative to the folder: sha256} of the photos and caption files."""
    return {name: hashlib.sha256(data).hexdigest() for name, data in read_inputs(folder)}


def hash_files(files: list[Path], folder: Path) -> dict[str, str]:
    """{path relative to folder: sha256}."""
    return {f.relative_to(folder).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def recorded_photos(session: Session) -> dict[str, str]:
    """{name: sha256} of a completed import; empty before one."""
    return (read_state(session) or {}).get("photos", {})


def training_started(session: Session) -> bool:
    """Training fixes the photo set: the fingerprint it records covers the dataset."""
    return "fingerprint" in (read_state(session) or {})


def reachable(folder: str | Path) -> bool:
    try:
        fs, root = photo_source(folder)
        return fs.isdir(root)
    except Exception:  # offline, no credentials: the session has its own copies
        return False


def uses_given_photos(session: Session, folder: str | Path | None) -> bool:
    """Whether `folder` is the run's photo set: always for a new session; until training
    starts when it can be read (it then replaces the session's copies); never after."""
    stored = recorded_photos(session)
    return bool(folder) and (not stored or (not training_started(session) and reachable(folder)))


def check_photos(session: Session, folder: str | Path | None) -> None:
    """Before anything slow: a new session needs readable photos; a session that has started
    training keeps its own. Before training starts the photo set may still change."""
    stored = recorded_photos(session)
    if not stored and folder is None:
        raise DatasetError(f"session {session.name!r} has no photos yet. Pass --photos with the "
                           "folder that holds your subject's photos.")
    if folder is None or (stored and not reachable(folder)):
        return  # resuming, perhaps on another machine: the session has its own copies
    given = hash_inputs(folder)
    if stored and stored != given and training_started(session):
        raise DatasetError(
            f"the photos in {str(folder)!r} differ from those session {session.name!r} was "
            "started with. Run without --photos to continue the session, or choose a new "
            "--session name for the new photos.")


def import_photos(session: Session, folder: str | Path | None) -> dict[str, str]:
    """Copy originals (and caption files) into the session, recording them only once all are copied.

    Until training starts, a changed photo set replaces the session's copies (only new or
    changed files are copied; the dataset step then prepares only those)."""
    stored = recorded_photos(session)
    if stored and not uses_given_photos(session, folder):
        return stored
    check_photos(session, folder)
    hashes = {}
    for name, data in read_inputs(folder):
        hashes[name] = hashlib.sha256(data).hexdigest()
        if stored.get(name) != hashes[name]:
            session.write_bytes(f"{PHOTOS}/{name}", data)
    if hashes == stored:
        return stored
    for name in sorted(set(stored) - set(hashes)):
        session.remove(f"{PHOTOS}/{name}")
    for place in sorted({PurePosixPath(PHOTOS, name).parent for name in hashes}):
        session.remove_temporary(str(place))
    update_state(session, photos=hashes)
    return hashes


def photos_digest(hashes: dict[str, str]) -> str:
    return digest(sorted(hashes.items()))
