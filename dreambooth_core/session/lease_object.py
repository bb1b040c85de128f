"""The lease object's compare-and-swap operations on each kind of storage.

Each operation takes and returns a `version`: the object's generation on GCS,
its content on local disk (changed only under an exclusive file lock). A
`create` or `replace` that loses a race returns None.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from urllib.parse import quote

from fsspec.implementations.local import LocalFileSystem

from dreambooth_core.session.folder import Session, temporary_name


class LocalLeaseObject:
    """Local disk (one machine): every read-check-write happens under flock."""

    def __init__(self, path: str):
        self.path = path

    @contextmanager
    def _locked(self):
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if this process dies
            yield
        finally:
            os.close(fd)

    def _read(self) -> bytes | None:
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _write(self, data: bytes) -> None:
        temporary = temporary_name(self.path)
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)

    def read(self) -> tuple[bytes, bytes] | None:
        with self._locked():
            data = self._read()
        return None if data is None else (data, data)

    def create(self, data: bytes) -> bytes | None:
        with self._locked():
            if self._read() is not None:
                return None
            self._write(data)
            return data

    def replace(self, data: bytes, version: bytes) -> bytes | None:
        with self._locked():
            if self._read() != version:
                return None
            self._write(data)
            return data

    def delete(self, version: bytes) -> None:
        with self._locked():
            if self._read() == version:
                os.remove(self.path)


class GcsLeaseObject:
    """Google Cloud Storage: generation preconditions make each write a compare-and-swap
    (ifGenerationMatch=0: create only)."""

    def __init__(self, fs, path: str):
        self.fs, self.path = fs, path
        self.bucket, self.key, _ = fs.split_path(path)

    def read(self) -> tuple[bytes, str] | None:
        self.fs.invalidate_cache(self.path)
        try:
            generation = str(self.fs.info(self.path)["generation"])
            return self.fs.cat_file(self.path), generation
        except FileNotFoundError:
            return None

    def _upload(self, data: bytes, generation: str) -> str | None:
        try:
            result = self.fs.call("POST", f"{self.fs._location}/upload/storage/v1/b/{quote(self.bucket)}/o",
                                  uploadType="media", name=self.key, ifGenerationMatch=generation,
                                  data=data, json_out=True)
        except FileExistsError:  # HTTP 412: the precondition failed
            return None
        finally:
            self.fs.invalidate_cache(self.path)
        return str(result["generation"])

    def create(self, data: bytes) -> str | None:
        return self._upload(data, "0")

    def replace(self, data: bytes, version: str) -> str | None:
        return self._upload(data, version)

    def delete(self, version: str) -> None:
        try:
            self.fs.call("DELETE", f"{self.fs._location}/storage/v1/b/{quote(self.bucket)}/o/"
                         f"{quote(self.key, safe='')}", ifGenerationMatch=version)
        except (FileNotFoundError, FileExistsError):
            pass  # already gone, or no longer ours
        finally:
            self.fs.invalidate_cache(self.path)


class PlainLeaseObject:
    """Other fsspec stores (memory://...): no compare-and-swap, so only best effort."""

    def __init__(self, session: Session, relative: str):
        self.session, self.relative = session, relative

    def read(self) -> tuple[bytes, bytes] | None:
        self.session.fs.invalidate_cache()
        return ((data := self.session.read_bytes(self.relative), data) if self.session.exists(self.relative)
                else None)

    def create(self, data: bytes) -> bytes | None:
        return None if self.read() else self._write(data)

    def replace(self, data: bytes, version: bytes) -> bytes | None:
        current = self.read()
        return self._write(data) if current and current[1] == version else None

    def _write(self, data: bytes) -> bytes:
        self.session.write_bytes(self.relative, data)
        return data

    def delete(self, version: bytes) -> None:
        current = self.read()
        if current and current[1] == version:
            self.session.remove(self.relative)


def lease_object(session: Session, relative: str):
    path = session.path(relative)
    if isinstance(session.fs, LocalFileSystem):
        return LocalLeaseObject(path)
    if "gcs" in session.fs.protocol or "gs" in session.fs.protocol:
        return GcsLeaseObject(session.fs, path)
    return PlainLeaseObject(session, relative)
