"""A session is opened once per process: later opens, and SessionRefs that crossed a task
boundary as data, get the Session opened first; its checks run once per run."""

import shutil

import pytest

from dreambooth_core.errors import StorageError
from dreambooth_core.session.folder import Session
from dreambooth_core.session.storage import SessionRef, open_named_session


def test_a_session_is_opened_once_per_process(tmp_path, monkeypatch):
    listed = []
    original = Session._open
    monkeypatch.setattr(Session, "_open",
                        lambda self, *args: listed.append(args) or original(self, *args))
    session = open_named_session(str(tmp_path), None, "s")
    ref = SessionRef.model_validate_json(SessionRef(storage=str(tmp_path), name="s", uid="u").model_dump_json())
    assert ref.open() is session and open_named_session(str(tmp_path) + "/", None, "s") is session
    assert open_named_session(str(tmp_path), None, "t") is not session
    assert len(listed) == 2  # s and t, each once


def test_a_long_lived_process_keeps_only_the_sessions_it_used_last(tmp_path):
    from dreambooth_core.session.storage import OPENED_KEPT

    first = open_named_session(str(tmp_path), None, "s0")
    opened = [open_named_session(str(tmp_path), None, f"s{n}") for n in range(1, OPENED_KEPT // 2)]
    assert open_named_session(str(tmp_path), None, "s0") is first  # used again: now the most recent
    opened += [open_named_session(str(tmp_path), None, f"s{n}") for n in range(OPENED_KEPT // 2, OPENED_KEPT + 1)]
    assert open_named_session(str(tmp_path), None, "s0") is first
    assert open_named_session(str(tmp_path), None, "s1") is not opened[0]  # dropped, opened again
    assert open_named_session(str(tmp_path), None, f"s{OPENED_KEPT}") is opened[-1]


def test_a_check_that_passed_is_not_made_again_until_forgotten(tmp_path):
    storage = tmp_path / "storage"
    session = open_named_session(str(storage), None, "s")
    session.check_writable()
    shutil.rmtree(storage)
    storage.write_bytes(b"now a file: nothing can be written under it")
    session.check_writable()  # passed in this run already: not probed again
    session.forget_checks()  # the run ended
    with pytest.raises(StorageError, match="cannot write to session storage"):
        session.check_writable()
