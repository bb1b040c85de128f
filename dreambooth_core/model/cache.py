"""Folders in the model cache that are built once, and file hashes worth remembering.

A cache folder is built in a hidden temp folder beside its final place and then
renamed, so a killed build never leaves a half-written model where a later run
would trust it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from dreambooth_core.errors import ConfigError

_HASH_BLOCK = 1 << 20
CACHE_VARIABLE = "DREAMBOOTH_CACHE"


def model_cache_dir() -> Path:
    """The folder downloaded and converted models are kept in ($DREAMBOOTH_CACHE, else
    ~/.cache/dreambooth), created if missing; a ConfigError naming it if it cannot hold files."""
    given = os.environ.get(CACHE_VARIABLE)
    folder = Path(given or Path.home() / ".cache" / "dreambooth").expanduser()
    probe = folder / f".write-check-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        where = f"{CACHE_VARIABLE}={given}" if given else f"the model cache {folder}"
        file = next((p for p in (folder, *folder.parents) if p.is_file()), None)
        what = ("is a file, not a folder" if file == folder else f"is not a folder ({file} is a file)"
                if file else f"cannot hold files ({exc.strerror or exc})")
        raise ConfigError(f"{where} {what}. Set {CACHE_VARIABLE} to a folder this user can write to "
                          f"(it is made if missing), or unset it to use ~/.cache/dreambooth.") from None
    return folder


def build_once(target: Path, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """Return `target`, calling `build(temp_folder)` to create it if it is missing.

    The second value says whether this call built it. Processes sharing the cache
    wait for each other instead of building the same folder twice.
    """
    target = Path(target)
    if target.is_dir():
        return target, False
    with file_lock(target.with_name(f".{target.name}.lock")):
        if target.is_dir():
            return target, False
        temp = target.with_name(f".{target.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        temp.mkdir()  # unlike mkdtemp, keeps the umask's permissions: the cache may be shared
        try:
            build(temp)
            temp.rename(target)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    return target, True


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) so one process at a time does the work.

    Without fcntl (Windows) this does nothing; the cache then relies on its atomic renames alone.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits while another process holds it
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def file_sha256(path: Path, cache_dir: Path) -> str:
    """The sha256 of a file, remembered while its size and mtime stay the same.

    Hashing a multi-gigabyte checkpoint takes seconds; the record under
    cache_dir/"hashes" spares that on every later run.
    """
    path = Path(path).resolve()
    stat = path.stat()
    stamp = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    record = Path(cache_dir) / "hashes" / f"{_text_sha256(str(path))[:16]}.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        if {k: saved.get(k) for k in stamp} == stamp:
            return saved["sha256"]
    digest = _hash_file(path)
    record.parent.mkdir(parents=True, exist_ok=True)
    _write_text_atomic(record, json.dumps({**stamp, "sha256": digest}))
    return digest


def _hash_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(_HASH_BLOCK):
            sha.update(block)
    return sha.hexdigest()


def _text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _write_text_atomic(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text)
    temp.replace(path)
