"""The user's original photos: listing a folder of them and copying them, untouched, into
the session.

The photos folder may be local or any fsspec URL (gs://bucket/folder, memory://...,
a web folder's listing https://host/photos/). A run lists it once and reads each
file once (`read_once`): the checks and the import share those bytes, and what
the import recorded (`PhotoSet`: each file's sha256) travels to the later steps.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, ConfigDict

from dreambooth_core.errors import DatasetError
from dreambooth_core.hashing import digest
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import PHOTOS
from dreambooth_core.session.state import SessionState, load_state, update_state

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
MASK_SUFFIX = ".mask.png"
Reader = Callable[[], bytes]


class PhotoSet(BaseModel):
    """The photos and caption files a session trains on, as imported: name -> sha256."""

    model_config = ConfigDict(frozen=True)
    files: dict[str, str]

    @property
    def digest(self) -> str:
        return photos_digest(self.files)

    @property
    def photos(self) -> list[str]:
        return sorted(name for name in self.files if is_image(name))


def photos_digest(hashes: dict[str, str]) -> str:
    return digest(sorted(hashes.items()))


def is_image(name: str) -> bool:
    """A photo to train on (a subject mask file is not one)."""
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS and not is_mask(name)


def is_mask(name: str) -> bool:
    """A subject mask beside its photo, for --masked-loss: 'shrk (1).mask.png' for 'shrk (1).jpg'."""
    return name.lower().endswith(MASK_SUFFIX)


def mask_name(photo: str) -> str:
    return str(PurePosixPath(photo).with_suffix("")) + MASK_SUFFIX


def photo_source(location: str | Path) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and root of a photos folder: a local path or any fsspec URL
    (gs://bucket/folder, memory://folder, https://... with aiohttp installed)."""
    fs, root = fsspec.core.url_to_fs(str(location))
    return fs, root.rstrip("/") or root


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


def reachable(folder: str | Path) -> bool:
    try:
        fs, root = photo_source(folder)
        return fs.isdir(root)
    except Exception:  # offline, no credentials: the session has its own copies
        return False


def folder_entries(location: str | Path) -> tuple[fsspec.AbstractFileSystem, dict[str, str | None]]:
    """{name relative to the folder: path in fs} for the files at the top and one sub-folder
    level down (one per subject), sorted, hidden names skipped; a folder deeper than that is
    listed as 'sub/deeper/' with no path (it is not read)."""
    fs, root = open_folder(location)

    def visible(folder: str) -> list[dict]:
        fs.invalidate_cache(folder)
        try:
            listed = fs.ls(folder, detail=True)
        except OSError as exc:  # permission denied, a folder that vanished...
            shown = str(location).rstrip("/") + folder[len(root):]
            raise DatasetError(f"cannot list photos folder {shown!r}: {exc.strerror or exc}. "
                               "Make it readable by this user (chmod a+rx), or pass another "
                               "--photos.") from exc
        return sorted((e for e in listed if not posixpath.basename(e["name"].rstrip("/")).startswith(".")),
                      key=lambda e: e["name"])

    entries: dict[str, str | None] = {}
    for entry in visible(root):
        name = _printable(entry_name(entry["name"]))
        if entry["type"] != "directory":
            entries[name] = entry["name"]
            continue
        for inner in visible(entry["name"]):
            inner_name = f"{name}/{_printable(entry_name(inner['name']))}"
            entries[inner_name + "/" if inner["type"] == "directory" else inner_name] = \
                None if inner["type"] == "directory" else inner["name"]
    return fs, entries


def _printable(name: str) -> str:
    """A name that is not valid UTF-8 (bytes Python keeps as surrogates) shown with \\xNN escapes,
    so the report can still be written; the name check then refuses it."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def folder_files(location: str | Path) -> dict[str, Reader]:
    """{name relative to the folder: reader of its bytes} (folder_entries; deeper folders read as b"")."""
    fs, entries = folder_entries(location)
    return {name: (lambda p=path: fs.cat_file(p)) if path else (lambda: b"")
            for name, path in entries.items()}


def find_photos(folder: str | Path) -> list[Path] | list[str]:
    """The image files of `folder` (folder_entries), sorted: Paths for a local folder, else URLs."""
    fs, entries = folder_entries(folder)
    found = [path for name, path in entries.items() if path and is_image(name)]
    if not found:
        raise _no_photos(str(folder))
    return [Path(p) for p in found] if isinstance(fs, LocalFileSystem) \
        else [fs.unstrip_protocol(p) for p in found]


def _no_photos(source: str) -> DatasetError:
    return DatasetError(f"no photos in {source!r}: expected image files "
                        f"({', '.join(sorted(IMAGE_EXTENSIONS))}). Add photos of your subject "
                        "named after its identifier, e.g. 'shrk (1).jpg'.")


def import_names(names) -> list[str]:
    """What the session keeps of a folder: the photos and, for those that have one, their
    caption file ('shrk (1).txt') and subject mask ('shrk (1).mask.png'), sorted."""
    names = set(names)
    photos = sorted(name for name in names if is_image(name))
    captions = [c for c in (str(PurePosixPath(p).with_suffix(".txt")) for p in photos) if c in names]
    masks = [m for m in map(mask_name, photos) if m in names]
    return sorted(photos + captions + masks)


def read_once(files: dict[str, Reader], keep: list[str]) -> dict[str, Reader]:
    """The same readers, those named in `keep` remembering their bytes: the checks read a
    file, and the import takes the same bytes without a second download."""
    def remembered(read: Reader) -> Reader:
        lock, kept = threading.Lock(), []

        def read_remembered() -> bytes:
            with lock:
                if not kept:
                    kept.append(read())
                return kept[0]
        return read_remembered
    wanted = set(keep)
    return {name: remembered(read) if name in wanted else read for name, read in files.items()}


def uses_given_photos(state: SessionState | None, folder: str | Path | None) -> bool:
    """Whether `folder` is the run's photo set: always for a new session; until training
    starts when it can be read (it then replaces the session's copies); never after."""
    stored = state.photos if state else {}
    return bool(folder) and (not stored or (not state.training_started and reachable(folder)))


def require_photos(session: Session, folder: str | Path | None) -> None:
    """Before anything slow: a session without photos needs --photos, and a folder this run
    uses must exist, be readable and hold photos. Once per run (Session.check_once)."""
    session.check_once(f"photos in {folder}", lambda: _require_photos(session, folder))


def _require_photos(session: Session, folder: str | Path | None) -> None:
    state = load_state(session)
    if folder is None and not (state and state.photos):
        raise DatasetError(f"session {session.name!r} has no photos yet. Pass --photos with the "
                           "folder that holds your subject's photos.")
    if uses_given_photos(state, folder):
        find_photos(folder)


def refuse_changed_photos(session: Session, state: SessionState,
                          folder: str | Path | None) -> dict[str, Reader] | None:
    """A session that has started training keeps its photos: a different folder is refused
    (an unreachable one is not: the session has its own copies, perhaps on another machine).
    Returns the folder's files when it holds the session's photos (they can put back a copy
    edited since), else None."""
    if folder is None or not state.training_started or not reachable(folder):
        return None
    files = folder_files(folder)
    given = {name: hashlib.sha256(files[name]()).hexdigest() for name in import_names(files)}
    if given != state.photos:
        raise DatasetError(
            f"the photos in {str(folder)!r} differ from those session {session.name!r} was "
            "started with. Run without --photos to continue the session, or choose a new "
            "--session name for the new photos.")
    return files


def hashing_readers(files: dict[str, Reader]) -> tuple[dict[str, Reader], dict[str, str]]:
    """The same readers, and the sha256 of what each one read, filled in as they are called
    (so a file is hashed where it is read anyway, and its bytes are not kept)."""
    hashes: dict[str, str] = {}

    def hashing(name: str, read: Reader) -> Reader:
        def read_and_hash() -> bytes:
            data = read()
            hashes[name] = hashlib.sha256(data).hexdigest()
            return data
        return read_and_hash
    return {name: hashing(name, read) for name, read in files.items()}, hashes


def checked_copies(session: Session, state: SessionState, copies: dict[str, Reader],
                   hashes: dict[str, str],
                   originals: dict[str, Reader] | None, log: logging.Logger) -> PhotoSet:
    """The session's photo set once its copies in photos/ (`copies`; `hashes`: those already
    read) are checked against the sha256s recorded at the import. A copy edited (or a caption
    file removed) by hand since:
    - before training started, is taken as it is now: recorded again, so its training image is
      prepared again (the same as passing the edited folder with --photos);
    - after, is put back from `originals` (the --photos folder the session started with) when
      given, else refused: the session's fingerprint covers the dataset it trains on, and the
      old crop must not go on standing in for a photo that is no longer there."""
    found = {name: hashes.get(name) or _sha256_of(copies[name]) for name in state.photos}
    changed = sorted(name for name in state.photos if found[name] != state.photos[name])
    if not changed:
        return PhotoSet(files=state.photos)
    shown = ", ".join(f"{PHOTOS}/{name}" for name in changed)
    if not state.training_started:
        log.warning("%s changed in session %r since it was imported; training uses it as it is now (its "
                    "image is prepared again)", shown, session.name)
        hashes = {name: sha for name, sha in found.items() if sha is not None}
        update_state(session, photos=hashes)
        return PhotoSet(files=hashes)
    if originals is not None:
        for name in changed:
            session.write_bytes(f"{PHOTOS}/{name}", originals[name]())
        log.warning("%s changed in session %r after training started; put back from the photos folder "
                    "given", shown, session.name)
        return PhotoSet(files=state.photos)
    raise DatasetError(
        f"{shown} in session {session.name!r} changed (or went missing) after training started: the "
        "session has trained on the photo as it was imported, and its training fingerprint covers that "
        "dataset. Either put the original back (run again with --photos and the folder the session was "
        f"started with, which copies it back, or copy it to {session.url}/{PHOTOS}/ yourself), or train on "
        "the edited photo in a new session (--session NEW_NAME --photos FOLDER).")


def _sha256_of(read: Reader) -> str | None:
    try:
        return hashlib.sha256(read()).hexdigest()
    except FileNotFoundError:
        return None


def import_files(session: Session, files: dict[str, Reader], source: str) -> PhotoSet:
    """Copy the photos and caption files among `files` into the session, recording them only
    once all are copied. Until training starts, a changed photo set replaces the session's
    copies (only new or changed files are copied; the dataset step then prepares only those)."""
    state = load_state(session)
    stored = state.photos if state else {}
    names = import_names(files)
    if not any(is_image(name) for name in names):
        raise _no_photos(source)
    hashes = {}
    for name in names:
        data = _read_file(files, name, source)
        hashes[name] = hashlib.sha256(data).hexdigest()
        if stored.get(name) != hashes[name]:
            session.write_bytes(f"{PHOTOS}/{name}", data)
    if hashes == stored:
        return PhotoSet(files=stored)
    for name in sorted(set(stored) - set(hashes)):
        session.remove(f"{PHOTOS}/{name}")
    for place in sorted({PurePosixPath(PHOTOS, name).parent for name in hashes}):
        session.remove_temporary(str(place))
    update_state(session, photos=hashes)
    return PhotoSet(files=hashes)


def _read_file(files: dict[str, Reader], name: str, source: str) -> bytes:
    try:
        return files[name]()
    except OSError as exc:  # e.g. a caption file without read permission
        raise DatasetError(f"cannot read {name!r} in {source!r}: {exc.strerror or exc}. Make it "
                           "readable by this user (chmod a+r), or remove it.") from exc


def import_photos(session: Session, folder: str | Path | None) -> PhotoSet:
    """The session's photo set: `folder` imported when it is the run's set (uses_given_photos),
    else the session's own copies."""
    require_photos(session, folder)
    state = load_state(session)
    if not uses_given_photos(state, folder):
        return PhotoSet(files=state.photos)
    return import_files(session, folder_files(folder), str(folder))
