"""Committed training checkpoints in a session.

A checkpoint is a folder `checkpoints/step-NNNNNN/` of files plus MANIFEST.json
(names, sizes, sha256) written last. On local disk the folder is assembled
under a temporary name, fsynced and renamed; on object stores, where there is
no rename, the manifest object itself is the commit. The latest checkpoint is
the highest step whose manifest exists and whose files verify against it;
anything else is ignored and, after the next commit, deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

import torch
from pydantic import BaseModel, ConfigDict

from dreambooth_core.errors import StorageError
from dreambooth_core.session.folder import Session, storage_writes
from dreambooth_core.session.lease import check_lease
from dreambooth_core.session.paths import CHECKPOINT_MANIFEST, CHECKPOINTS, SHARDED_STATE, checkpoint_folder

_STEP_DIR = re.compile(r"^step-(\d{6,})$")

Writer = Callable[[BinaryIO], Any]


class FileRecord(BaseModel):
    model_config = ConfigDict(frozen=True)
    size: int
    sha256: str


class CheckpointManifest(BaseModel):
    """MANIFEST.json of a checkpoint folder: written last, it is the commit."""

    model_config = ConfigDict(frozen=True)
    step: int
    meta: dict[str, Any]
    files: dict[str, FileRecord]
    committed_at: float

    @property
    def run(self) -> str:
        """The id of the run that committed it (a checkpoint of an earlier version: when it was)."""
        return self.meta.get("run") or f"committed at {self.committed_at!r}"


@dataclass(frozen=True)
class Checkpoint:
    step: int
    meta: dict
    files: dict[str, bytes]


class _HashingFile:
    """Counts and hashes what passes through to the real file."""

    def __init__(self, target: BinaryIO):
        self.target, self.size, self.sha256 = target, 0, hashlib.sha256()
        self.failure: OSError | None = None  # the disk's own error, which torch.save rewords

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        self.size += view.nbytes
        try:
            return self.target.write(data)
        except OSError as exc:
            self.failure = exc
            raise

    def flush(self) -> None:
        self.target.flush()


class CheckpointStore:
    """Save and find committed checkpoints; keep the newest `keep`."""

    def __init__(self, session: Session, keep: int = 2, log: logging.Logger | None = None):
        assert keep >= 2, "keeping fewer than two checkpoints can lose the only good one"
        self.session, self.keep = session, keep
        self.log = log or logging.getLogger("dreambooth")

    def save(self, step: int, writers: dict[str, Writer], meta: dict) -> None:
        """Write every file, then the manifest; then apply retention."""
        self.session.remove(checkpoint_folder(step))  # an uncommitted or corrupt leftover at this step
        staging = self.staging_folder(step, uuid.uuid4().hex[:8])
        with self._committing(step, staging) as committed:
            files = {name: self._write(f"{staging}/{name}", write) for name, write in writers.items()}
            committed.update(self._commit(step, staging, files, meta))

    def staging_folder(self, step: int, tag: str) -> str:
        """Where the files of the checkpoint at `step` are written before the commit (on object
        stores, where nothing is visible before its manifest: the checkpoint's own folder)."""
        local = f"{CHECKPOINTS}/.tmp-step-{step:06d}-{tag}"
        return local if self.session.is_local else checkpoint_folder(step)

    def commit_written(self, step: int, staging: str, files: dict[str, FileRecord], meta: dict) -> None:
        """Commit files that others wrote into `staging` (every process of a sharded checkpoint
        writes its own): the manifest, then retention."""
        with self._committing(step, staging) as committed:
            committed.update(self._commit(step, staging, files, meta))

    @contextlib.contextmanager
    def _committing(self, step: int, staging: str):
        """Around a commit: a failure removes the staging folder and is told with the step that
        stays the latest; success is logged and old checkpoints go."""
        committed: dict[str, FileRecord] = {}
        try:
            with storage_writes(self.session.storage, f"the checkpoint at step {step}",
                                inside=self.session.root if self.session.is_local else None):
                yield committed
        except Exception as exc:
            if self.session.is_local:
                with contextlib.suppress(StorageError):  # a read-only one: the next run removes it
                    self.session.remove(staging)  # a full disk gets its space back at once
            if isinstance(exc, StorageError):
                latest = self.latest_step()
                raise StorageError(f"the checkpoint at step {step} was not committed (the latest "
                                   f"committed one is step {latest}, intact): {exc}") from exc
            raise
        self.log.info("Committed checkpoint at step %d (%s)", step, _size(committed))
        self._apply_retention()

    def _commit(self, step: int, staging: str, files: dict[str, FileRecord],
                meta: dict) -> dict[str, FileRecord]:
        final = checkpoint_folder(step)
        manifest = CheckpointManifest(step=step, meta=meta, files=files, committed_at=time.time())
        check_lease(self.session)  # a run whose lease was taken over must not commit
        self._write(f"{staging}/{CHECKPOINT_MANIFEST}",
                    lambda f: f.write(_json(manifest.model_dump(mode="json"))))
        if self.session.is_local:
            _fsync_dir(self.session.path(staging))
            self.session.rename(staging, final)
            _fsync_dir(self.session.path(CHECKPOINTS))
        return files

    def _write(self, relative: str, write: Writer) -> FileRecord:
        written = []

        def hashed(raw: BinaryIO) -> None:
            written.append(_HashingFile(raw))
            try:
                write(written[0])
            except Exception as exc:
                if written[0].failure is not None and written[0].failure is not exc:
                    raise written[0].failure from exc  # ENOSPC, not the serializer's account of it
                raise

        # Atomic per file: a failed upload never leaves a partial object under this name.
        self.session.write_with(relative, hashed)
        return FileRecord(size=written[0].size, sha256=written[0].sha256.hexdigest())

    def committed(self) -> dict[int, CheckpointManifest]:
        """The manifests of the steps whose manifest exists and whose file sizes match it (cheap:
        no hashing), by step in order."""
        self.session.fs.invalidate_cache()  # object-store listings are cached: see other writers' commits
        manifests = {step: self._manifest_if_sizes_match(step) for step in self._step_dirs()}
        return {step: manifest for step, manifest in manifests.items() if manifest}

    def committed_steps(self) -> list[int]:
        return list(self.committed())

    def latest_step(self) -> int:
        steps = self.committed_steps()
        return steps[-1] if steps else 0

    def load_latest(self, max_step: int | None = None) -> Checkpoint | None:
        """The newest checkpoint at or below max_step whose files verify, read into memory."""
        for step in reversed(self.committed_steps()):
            if max_step is not None and step > max_step:
                continue
            checkpoint = self._read_verified(step)
            if checkpoint is not None:
                return checkpoint
        return None

    def load(self, step: int, only: Collection[str] | None = None) -> Checkpoint | None:
        """The checkpoint at `step` if it is committed and its files verify, read into memory;
        `only`: just these of its files (those present), e.g. the weights without the optimizer."""
        return self._read_verified(step, only)

    def _read_verified(self, step: int, only: Collection[str] | None = None) -> Checkpoint | None:
        manifest = self._manifest_if_sizes_match(step)
        if manifest is None:
            return None
        files = {}
        for name, expected in manifest.files.items():
            if (only is not None and name not in only) or name.startswith(f"{SHARDED_STATE}/"):
                continue  # a sharded state's files are verified by the processes that load them
            data = self.session.read_bytes(f"{checkpoint_folder(step)}/{name}")
            if hashlib.sha256(data).hexdigest() != expected.sha256:
                return self._corrupt(step, name)
            files[name] = data
        return Checkpoint(step=step, meta=manifest.meta, files=files)

    def _corrupt(self, step: int, name: str) -> None:
        self.log.warning("Checkpoint at step %d is corrupt (%s does not match its "
                         "manifest); falling back to the previous one", step, name)
        self.session.remove(f"{checkpoint_folder(step)}/{CHECKPOINT_MANIFEST}")  # uncommit it

    def verify(self, step: int, names: Collection[str]) -> bool:
        """Whether these files of the committed checkpoint at `step` match its manifest, read in
        pieces (a shard of a large model's state does not fit in memory); uncommits it if not."""
        manifest = self._manifest_if_sizes_match(step)
        if manifest is None:
            return False
        for name in names:
            if self.record(f"{checkpoint_folder(step)}/{name}") != manifest.files[name]:
                self._corrupt(step, name)
                return False
        return True

    def record(self, relative: str) -> FileRecord:
        """The size and sha256 of a file of the session, read in pieces."""
        digest, size = hashlib.sha256(), 0
        with self.session.fs.open(self.session.path(relative), "rb") as file:
            while piece := file.read(2**24):
                digest.update(piece)
                size += len(piece)
        return FileRecord(size=size, sha256=digest.hexdigest())

    def manifest(self, step: int) -> CheckpointManifest | None:
        """The commit record of `step` as written, or None (no commit, or unreadable)."""
        try:
            return self._read_manifest(step)
        except (FileNotFoundError, ValueError):
            return None

    def _read_manifest(self, step: int) -> CheckpointManifest:
        return CheckpointManifest.model_validate(
            self.session.read_json(f"{checkpoint_folder(step)}/{CHECKPOINT_MANIFEST}"))

    def _manifest_if_sizes_match(self, step: int) -> CheckpointManifest | None:
        """The manifest of `step`, or None: quietly when there is none (never committed), with a
        warning naming what is wrong when it is damaged or a file it lists is gone or resized."""
        try:
            manifest = self._read_manifest(step)
        except FileNotFoundError:
            return None
        except ValueError as exc:  # unreadable JSON, or not a manifest (a ValidationError)
            return self._unusable(step, f"its {CHECKPOINT_MANIFEST} is damaged: {exc}")
        for name, expected in manifest.files.items():
            try:
                size = self.session.size(f"{checkpoint_folder(step)}/{name}")
            except FileNotFoundError:
                return self._unusable(step, f"{name} is missing")
            if size != expected.size:
                return self._unusable(step, f"{name} has the wrong size")
        return manifest

    def _unusable(self, step: int, why: str) -> None:
        self.log.warning("Checkpoint at step %d is unusable (%s); falling back to the previous one",
                         step, why)

    def _step_dirs(self) -> list[int]:
        names = self.session.list(CHECKPOINTS)
        return sorted(int(m.group(1)) for m in map(_STEP_DIR.match, names) if m)

    def _apply_retention(self) -> None:
        committed = self.committed_steps()
        keep = set(committed[-self.keep:])
        for name in self.session.list(CHECKPOINTS):
            match = _STEP_DIR.match(name)
            if match and int(match.group(1)) in keep:
                continue
            self.session.remove(f"{CHECKPOINTS}/{name}")


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode()


def _size(files: dict[str, FileRecord]) -> str:
    return f"{sum(f.size for f in files.values()) / 1e6:.1f} MB"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_tensor_file(data: bytes):
    """Deserialize a tensor-only torch file without allowing arbitrary pickles."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
