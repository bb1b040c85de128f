"""One folder per session on fsspec storage: the single source of truth.

Every path is relative to the session root and checked to stay inside it.
Writes are atomic: on local disk a temporary file is fsynced and renamed; on
object stores an object only becomes visible once its upload completes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import posixpath
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractBufferedFile

from dreambooth_core.config import SHARED_FOLDERS, session_name_problem
from dreambooth_core.errors import SessionError, StorageError
from dreambooth_core.session.filesystem import filesystem_for

_TEMPORARY = re.compile(r"\.tmp-[0-9a-f]{8}$")
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_REFUSED = {errno.EROFS, errno.EACCES, errno.EPERM}
_LOW_SPACE = 1 << 20  # bytes free below which a failed local write is taken for a full disk


def open_storage(url: str, options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and root path of a storage URL, created if missing."""
    try:
        fs, root = filesystem_for(url, options)
        if isinstance(fs, LocalFileSystem):
            root = os.path.abspath(root)
        fs.makedirs(root, exist_ok=True)
        _check_listable(fs, root)
    except Exception as exc:  # fsspec raises many types for one meaning
        raise StorageError(
            f"cannot use session storage {url!r}: {exc.__class__.__name__}: {exc}. "
            "Check that the folder or bucket exists and is writable and that credentials "
            "are set, or pass another --storage.") from exc
    return fs, root.rstrip("/")


def _check_listable(fs: fsspec.AbstractFileSystem, root: str) -> None:
    try:
        fs.ls(root)
    except FileNotFoundError:
        if isinstance(fs, LocalFileSystem):
            raise
        fs.ls(root.split("/")[0])  # object stores have no folders: a new prefix in a bucket is fine


def check_session_name(name: str) -> None:
    """Refuse a name that leaves the storage root or is one the storage uses itself."""
    if problem := session_name_problem(name):
        raise SessionError(f"{problem}.")


def out_of_space(exc: BaseException, local_folder: str | None = None) -> bool:
    """Whether a write failed for want of space: ENOSPC or EDQUOT in the error's chain, or,
    since some writers report it in their own words (torch's serializer: "unexpected pos"),
    a local folder with almost no room left."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain is short; never follow a cycle
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in _NO_SPACE:
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return local_folder is not None and shutil.disk_usage(local_folder).free < _LOW_SPACE
    except OSError:
        return False


def no_space_error(storage: str, what: str) -> StorageError:
    return StorageError(
        f"no space left on the session storage {storage!r} while writing {what}. Free space "
        "there, or pass a --storage with more room, and run the same command again: everything "
        "committed before is kept, and training continues from the latest checkpoint.")


def refused_write(exc: BaseException, inside: str | None = None) -> OSError | None:
    """The error in `exc`'s chain by which the filesystem refused a write: read-only (a storage
    mounted or turned read-only) or no permission; with `inside`, only one about a path there
    (not, say, an unreadable model file). None if there is none."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain is short; never follow a cycle
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in _REFUSED and (
                inside is None or str(seen.filename or "").startswith(inside)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def not_writable_error(storage: str, where: str, refusal: OSError) -> StorageError:
    fix = ("it was mounted or has turned read-only: remount it read-write" if refusal.errno == errno.EROFS
           else "this user may not write there: chmod -R u+w the session folder, or run as its owner")
    return StorageError(
        f"cannot write to the session storage {storage!r}: writing {where} failed ({refusal.strerror}); "
        f"{fix}, or copy the session to a --storage you can write to. Then run the same command again: "
        "everything committed before is kept.")


@contextlib.contextmanager
def storage_writes(storage: str, what: str, local_folder: str | None = None,
                   inside: str | None = None) -> Iterator[None]:
    """Writes that fail because the storage is full or refuses them (read-only, no permission;
    with `inside`, about a path there) end as the StorageError that says what to do; other
    errors pass unchanged."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        if out_of_space(exc, local_folder):
            raise no_space_error(storage, what) from exc
        if (refusal := refused_write(exc, inside)) is not None:
            where = _TEMPORARY.sub("", str(refusal.filename)) if refusal.filename else what
            raise not_writable_error(storage, where, refusal) from exc
        raise


def _error_text(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{exc.__class__.__name__}: {exc}"


class Session:
    """A session folder: paths, JSON state and atomic file writes."""

    def __init__(self, storage: str, name: str, options: dict[str, Any] | None = None):
        check_session_name(name)
        self._open(storage, name, options)

    @classmethod
    def shared_folder(cls, storage: str, name: str, options: dict[str, Any] | None = None) -> "Session":
        """A folder the storage keeps beside its sessions (SHARED_FOLDERS), opened like one."""
        assert name in SHARED_FOLDERS, name
        folder = object.__new__(cls)
        folder._open(storage, name, options)
        return folder

    def _open(self, storage: str, name: str, options: dict[str, Any] | None) -> None:
        self.storage, self.name = storage, name
        self.fs, storage_root = open_storage(storage, options)
        self.root = f"{storage_root}/{name}"
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self._passed: set[str] = set()

    def check_once(self, what: str, check: Callable[[], None]) -> None:
        """Run `check` unless it has passed on this session already. A session is opened once per
        process (storage.open_named_session): the checks the CLI makes before any server starts
        are not made again by the flow it then runs in the same process; `forget_checks` (a run's
        end) makes the next run check again."""
        if what not in self._passed:
            check()
            self._passed.add(what)

    def forget_checks(self) -> None:
        self._passed.clear()

    def check_writable(self) -> None:
        """A StorageError now, before any work, if the storage cannot take a file (read-only,
        not a real folder such as /proc/1, no permission or credentials to write), or the
        session's own folder, where it exists, cannot. Once per run (check_once)."""
        self.check_once("writable", self._check_writable)

    def _check_writable(self) -> None:
        probe = temporary_name(f"{self.root.rsplit('/', 1)[0]}/.write-check")
        try:
            self.fs.pipe_file(probe, b"ok")
            self.fs.rm_file(probe)
        except Exception as exc:  # fsspec raises many types for one meaning
            raise StorageError(
                f"cannot write to session storage {self.storage!r}: creating a file there failed "
                f"({_error_text(exc)}). Pass a --storage folder or bucket this user can write "
                "to.") from exc
        if self.is_local and os.path.isdir(self.root):  # object stores have no folder to refuse
            probe = temporary_name(f"{self.root}/.write-check")
            try:
                with open(probe, "wb"):
                    pass
                os.remove(probe)
            except OSError as exc:
                if refused_write(exc) is None:
                    raise
                raise not_writable_error(self.storage, f"into the session folder {self.root}", exc) from exc

    def sibling(self, name: str) -> "Session":
        """Folder `name` beside this session, on the same (already opened) storage."""
        other = object.__new__(Session)
        other.storage, other.name, other.fs, other.is_local = self.storage, name, self.fs, self.is_local
        other.root = f"{self.root.rsplit('/', 1)[0]}/{name}"
        other._passed = set()
        return other

    def __repr__(self) -> str:
        return f"Session({self.url})"

    @property
    def url(self) -> str:
        return self.root if self.is_local else self.fs.unstrip_protocol(self.root)

    def path(self, relative: str) -> str:
        """Absolute path of `relative` inside the session; refuses anything that escapes it."""
        normal = posixpath.normpath(relative)
        if relative.startswith("/") or normal == ".." or normal.startswith("../"):
            raise SessionError(f"path {relative!r} leaves session {self.name!r}")
        return self.root if normal == "." else f"{self.root}/{normal}"

    def exists(self, relative: str) -> bool:
        return self.fs.exists(self.path(relative))

    def list(self, relative: str) -> list[str]:
        """Names directly inside a session folder (empty if it does not exist)."""
        folder = self.path(relative)
        self.fs.invalidate_cache(folder)
        if not self.fs.isdir(folder):
            return []
        names = (posixpath.basename(p.rstrip("/")) for p in self.fs.ls(folder, detail=False))
        return sorted(name for name in names if not _TEMPORARY.search(name))

    def remove_temporary(self, relative: str = ".") -> None:
        """Delete what killed atomic writes left behind in a folder."""
        folder = self.path(relative)
        if self.fs.isdir(folder):
            for path in self.fs.ls(folder, detail=False):
                if _TEMPORARY.search(path.rstrip("/")):
                    self.fs.rm(path, recursive=True)

    def size(self, relative: str) -> int:
        return self.fs.size(self.path(relative))

    def read_bytes(self, relative: str) -> bytes:
        return self.fs.cat_file(self.path(relative))

    def read_json(self, relative: str) -> Any:
        return json.loads(self.read_bytes(relative))

    def write_bytes(self, relative: str, data: bytes) -> None:
        self.write_with(relative, lambda f: f.write(data))

    def write_json(self, relative: str, value: Any) -> None:
        self.write_bytes(relative, json.dumps(value, indent=2, sort_keys=True).encode())

    def write_with(self, relative: str, write: Callable[[BinaryIO], Any]) -> None:
        """Atomically create `relative` with the bytes `write(file)` produces."""
        target = self.path(relative)
        local = (posixpath.dirname(target), self.root) if self.is_local else (None, None)
        with storage_writes(self.storage, relative, *local):
            self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
            if not self.is_local:
                _write_object(self.fs, target, write)
                return
            temporary = temporary_name(target)
            try:
                with open(temporary, "wb") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(temporary, target)
            finally:
                if os.path.exists(temporary):
                    with contextlib.suppress(OSError):  # a storage turned read-only keeps it
                        os.remove(temporary)

    def put_file(self, local: Path, relative: str) -> None:
        with open(local, "rb") as source:
            self.write_with(relative, lambda f: _copy(source, f))

    def put_folder(self, local: Path, relative: str) -> None:
        """Replace session folder `relative` with a copy of a local folder."""
        for file in sorted(Path(local).rglob("*")):
            if file.is_file():
                self.put_file(file, f"{relative}/{file.relative_to(local).as_posix()}")

    def get_file(self, relative: str, local: Path) -> None:
        self.fs.get_file(self.path(relative), str(local))

    def get_folder(self, relative: str, local: Path) -> None:
        """Copy session folder `relative` to a local folder, file by file."""
        root = self.path(relative)
        for remote in sorted(self.fs.find(root)):
            target = Path(local) / posixpath.relpath(remote, self.fs._strip_protocol(root))
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(remote, str(target))

    def remove(self, relative: str) -> None:
        target = self.path(relative)
        if self.fs.exists(target):
            with storage_writes(self.storage, f"the removal of {relative}", inside=self.root):
                self.fs.rm(target, recursive=True)

    def rename(self, source: str, target: str) -> None:
        with storage_writes(self.storage, f"the rename of {source} to {target}", inside=self.root):
            self.fs.mv(self.path(source), self.path(target), recursive=True)


def _write_object(fs: fsspec.AbstractFileSystem, target: str, write: Callable[[BinaryIO], Any]) -> None:
    """Object stores publish an object when its upload is finalized on close (gcsfs: a
    resumable upload, or one request for small files). A failed write is discarded, not
    closed, so it never finalizes a partial object; a killed process finalizes nothing."""
    f = fs.open(target, "wb")
    try:
        write(f)
    except BaseException:
        try:
            f.discard()  # cancels the resumable upload, if one was started
        except Exception:  # noqa: BLE001 - the upload is never finalized either way
            pass
        if isinstance(f, AbstractBufferedFile):
            f.closed = True  # or garbage collection would close, and so finalize, it
        raise
    f.close()


def temporary_name(path: str) -> str:
    return f"{path}.tmp-{uuid.uuid4().hex[:8]}"


def _copy(source: BinaryIO, target: BinaryIO) -> None:
    while block := source.read(1 << 20):
        target.write(block)
