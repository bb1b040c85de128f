"""session.json: the session's settings, photo set, training fingerprint and status.

`load_state` and `save_state` are the only readers and writers of the file. A file of
another format (format 1 was written only by unreleased versions) is refused, naming it.
While a run holds the session's lease it is the file's only writer: the file is then read
once and kept in memory (`kept_in_memory`), each save written through.
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from contextlib import contextmanager
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dreambooth_core.config import DreamBoothConfig, MemoryPlan, differing_fields
from dreambooth_core.errors import ConfigError, SessionError
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import SESSION_FILE
from dreambooth_core.session.storage import SessionRef, process_local

FORMAT = 2


class ExportRecord(BaseModel):
    """What the outputs in the session were exported from, and by which run."""

    model_config = ConfigDict(frozen=True)
    fingerprint: str
    step: int
    precision: str
    run: str | None = None  # None: written by an earlier version


class Committed(BaseModel):
    """What the session held when training was planned: the one account of what is already done.
    Training (chunk.py), the export (export/outputs.py) and the cache keys of their tasks all ask
    it. A run changes it only by its own commits (one writer per session: lease.py), each marked
    with the run's id, so the account stays true for the whole run."""

    model_config = ConfigDict(frozen=True)
    run: str = Field(default_factory=lambda: uuid.uuid4().hex)  # this run's id
    fingerprint: str
    checkpoints: dict[int, str] = Field(default_factory=dict)  # committed step -> the run that committed it
    export: ExportRecord | None = None  # the outputs in the session, when all of them are there

    @property
    def latest_step(self) -> int:
        return max(self.checkpoints, default=0)

    def step_done_by(self, step: int) -> str | None:
        """The run whose committed checkpoint holds step `step`, trained: the first at or past it."""
        return next((self.checkpoints[s] for s in sorted(self.checkpoints) if s >= step), None)

    def export_done_by(self, step: int, precision: str) -> str | None:
        """The run whose outputs of step `step` in `precision`, of this training, are in the session."""
        record = self.export
        done = record is not None and (record.fingerprint, record.step, record.precision) == (
            self.fingerprint, step, precision)
        return (record.run or "an earlier version") if done else None

    def done_by(self, step: int, precision: str | None = None) -> str | None:
        """Who did the result at `step`: its checkpoint, or with `precision` its export. None: not
        done yet, so it is this run's to do."""
        return self.step_done_by(step) if precision is None else self.export_done_by(step, precision)


def committed_state(session: Session, state: SessionState, fingerprint: str) -> Committed:
    """Read what the session holds of the training with `fingerprint`: its checkpoints and outputs."""
    checkpoints = {step: manifest.run for step, manifest in CheckpointStore(session).committed().items()}
    return Committed(fingerprint=fingerprint, checkpoints=checkpoints, export=present_export(session, state))


def present_export(session: Session, state: SessionState) -> ExportRecord | None:
    """The record of the session's outputs when every one of them is there."""
    return state.export if state.export and all(map(session.exists, state.outputs)) else None


class SessionState(BaseModel):
    model_config = ConfigDict(frozen=True)

    format: int = FORMAT
    uid: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    status: Literal["new", "complete"] = "new"
    config: DreamBoothConfig
    photos: dict[str, str] = Field(default_factory=dict, description="The imported photo set: "
                                   "name -> sha256 (photos and caption files).")
    fingerprint: dict[str, Any] | None = Field(None, description="What training was started with; "
                                               "recorded when the first chunk is planned.")
    total_steps: int | None = None
    memory_plan: MemoryPlan | None = Field(None, description="What --memory auto chose when training "
                                           "started; resumes train with it.")
    token_verdicts: dict[str, str] = Field(default_factory=dict, description="token -> good, risky or bad.")
    outputs: dict[str, int] = Field(default_factory=dict, description="Output file -> bytes.")
    export: ExportRecord | None = None

    @property
    def training_started(self) -> bool:
        """Training fixes the photo set: the fingerprint it records covers the dataset."""
        return self.fingerprint is not None


_UNREAD = object()
_kept: weakref.WeakKeyDictionary[Session, Any] = weakref.WeakKeyDictionary()  # session -> its state
_updating = threading.Lock()  # tasks run in threads: one read-change-write at a time


@contextmanager
def kept_in_memory(session: Session) -> Iterator[None]:
    """session.json read once, then served from memory; every save still writes the file first.
    For a run that holds the session's lease (the only writer), and for the checks a command makes
    in the second before its run starts."""
    _kept[session] = _UNREAD
    try:
        yield
    finally:
        _kept.pop(session, None)


def load_state(session: Session) -> SessionState | None:
    kept = _kept.get(session, _UNREAD)
    if kept is not _UNREAD:
        return kept
    state = _read_state(session)
    if session in _kept:
        _kept[session] = state
    return state


def _read_state(session: Session) -> SessionState | None:
    if not session.exists(SESSION_FILE):
        return None
    where = f"{session.url}/{SESSION_FILE}"
    try:
        data = session.read_json(SESSION_FILE)
    except ValueError as exc:
        raise SessionError(f"{where} is not valid JSON ({exc}). Restore it from a backup or "
                           "start a new --session.") from exc
    written = data.get("format", 1) if isinstance(data, dict) else None
    if isinstance(written, int) and written > FORMAT:
        raise SessionError(f"{where} was written by a newer version of this tool (format "
                           f"{written}). Update it, or start a new --session.")
    if isinstance(written, int) and written < FORMAT:
        raise SessionError(f"{where} is in session format {written}, which only unreleased versions of "
                           f"this tool wrote and this one does not read (it reads format {FORMAT}). "
                           "Start a new session: pass another --session name with --photos (the old "
                           "folder's files stay as they are).")
    try:
        return SessionState.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the file'}: {e['msg']}"
                             for e in exc.errors())
        raise SessionError(f"{where} is damaged ({problems}). Restore it from a backup or "
                           "start a new --session.") from None


def existing_state(session: Session, where: str | None = None) -> SessionState:
    """The state of a session a command names; a SessionError if there is no such session.
    `where`: the storage as the user named it (a block's name), if not its URL."""
    state = load_state(session)
    if state is None:
        gone = (f" ({session.storage} holds sessions only while the command that made them runs)"
                if process_local(session.storage) else "")
        raise SessionError(f"there is no session {session.name!r} in {where or session.storage}{gone}. "
                           "Pass the --storage it was trained with, or another --session.")
    return state


def save_state(session: Session, state: SessionState) -> None:
    session.write_json(SESSION_FILE, state.model_dump(mode="json"))
    if session in _kept:
        _kept[session] = state


def update_state(session: Session, **changes: Any) -> SessionState:
    """Change fields of the existing state and save it."""
    with _updating:
        state = load_state(session)
        if state is None:
            raise SessionError(f"session {session.name!r} has no {SESSION_FILE} yet; open it first.")
        state = SessionState.model_validate({**state.model_dump(), **changes, "updated_at": time.time()})
        save_state(session, state)
    return state


def stored_config(session: Session) -> DreamBoothConfig | None:
    state = load_state(session)
    return state.config if state else None


def open_or_create(session: Session, config: DreamBoothConfig) -> SessionRef:
    """Check `config` against the session's record, then record it.

    Settings are free to change until training has started (a fingerprint is recorded)."""
    state = load_state(session)
    if state is None:
        state = SessionState(config=config)
    elif state.training_started:
        refuse_changed_training(session, state.config, config)
    save_state(session, state.model_copy(update={"config": config, "updated_at": time.time()}))
    return SessionRef(storage=session.storage, name=config.session, uid=state.uid,
                      storage_block=config.inputs.storage_block)


def refuse_changed_training(session: Session, stored: DreamBoothConfig, given: DreamBoothConfig) -> None:
    before, after = stored.training_values(), given.training_values()
    changed = differing_fields(before, after)
    if changed:
        def shown(values, k):  # a setting added later is left out of the values at its old default
            return values.get(k, DreamBoothConfig.ADDED_LATER.get(k))

        details = ", ".join(f"{k} (session: {shown(before, k)!r}, now: {shown(after, k)!r})" for k in changed)
        raise ConfigError(
            f"session {session.name!r} was trained with different settings: {details}. "
            "Rerun without these flags to continue it, or pass a new --session name to "
            "train with the new settings.")
