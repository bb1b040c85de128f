"""session.json: the session's configuration, training fingerprint and status."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict

from tasks.config import DreamBoothConfig, differing_fields
from tasks.errors import ConfigError, SessionError
from tasks.session import SESSION_FILE, Session


class SessionRef(BaseModel):
    """How tasks find a session. `uid` changes if a session is deleted and recreated,
    so cached results of the old one never stand in for the new one."""

    model_config = ConfigDict(frozen=True)
    storage: str
    name: str
    uid: str
    storage_block: str | None = None  # a block's name, never its credentials

    def open(self) -> Session:
        return open_named_session(self.storage, self.storage_block, self.name)


def open_named_session(storage: str, storage_block: str | None, name: str) -> Session:
    """A session on a storage URL, or on the storage a block names."""
    if storage_block:
        # Credentials are read from Prefect's block store here, in the process that uses them.
        from blocks.session_storage import load_session_storage

        return load_session_storage(storage_block).open_session(name)
    return Session(storage, name)


def artifact_key(kind: str, session: str) -> str:
    """The Prefect artifact key of a session's report; keys allow lowercase letters, digits, dashes."""
    return f"{kind}-" + re.sub(r"[^a-z0-9-]+", "-", session.lower())


def read_state(session: Session) -> dict[str, Any] | None:
    if not session.exists(SESSION_FILE):
        return None
    try:
        return session.read_json(SESSION_FILE)
    except ValueError as exc:
        raise SessionError(f"{session.url}/{SESSION_FILE} is not valid JSON ({exc}). Restore it "
                           "from a backup or start a new --session.") from exc


def stored_config(session: Session) -> dict[str, Any] | None:
    state = read_state(session)
    return state["config"] if state else None


def update_state(session: Session, **changes: Any) -> dict[str, Any]:
    state = read_state(session) or {}
    state.update(changes, updated_at=time.time())
    session.write_json(SESSION_FILE, state)
    return state


def open_or_create(session: Session, config: DreamBoothConfig) -> SessionRef:
    """Check `config` against the session's record, then record it.

    Settings are free to change until training has started (a fingerprint is recorded)."""
    state = read_state(session)
    if state is None:
        state = {"format": 1, "uid": uuid.uuid4().hex, "created_at": time.time(), "status": "new"}
    elif "fingerprint" in state:
        refuse_changed_training(session, DreamBoothConfig(**state["config"]), config)
    update_state(session, **{**state, "config": config.model_dump()})
    return SessionRef(storage=session.storage, name=config.session, uid=state["uid"],
                      storage_block=config.storage_block)


def refuse_changed_training(session: Session, stored: DreamBoothConfig, given: DreamBoothConfig) -> None:
    before, after = stored.training_values(), given.training_values()
    changed = differing_fields(before, after)
    if changed:
        details = ", ".join(f"{k} (session: {before[k]!r}, now: {after[k]!r})" for k in changed)
        raise ConfigError(
            f"session {session.name!r} was trained with different settings: {details}. "
            "Rerun without these flags to continue it, or pass a new --session name to "
            "train with the new settings.")
