"""Session paths stay inside the session; writes are all or nothing."""

import pytest

import dreambooth_core.session.folder
from dreambooth_core.errors import SessionError
from dreambooth_core.session.folder import Session


@pytest.mark.parametrize("relative", ["../other/x", "/etc/passwd", "a/../../x"])
def test_paths_cannot_leave_the_session(tmp_path, relative):
    with pytest.raises(SessionError):
        Session(str(tmp_path), "s").path(relative)


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_partial(tmp_path, monkeypatch):
    session = Session(str(tmp_path), "s")
    source = tmp_path / "new.bin"
    source.write_bytes(b"n" * 1000)
    session.write_bytes("model.safetensors", b"old model")

    def copy_half_then_fail(src, dst):
        dst.write(src.read(500))
        raise OSError("disk full")

    monkeypatch.setattr(dreambooth_core.session.folder, "_copy", copy_half_then_fail)
    with pytest.raises(OSError):
        session.put_file(source, "model.safetensors")
    assert session.read_bytes("model.safetensors") == b"old model"
    assert session.list(".") == ["model.safetensors"]
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["model.safetensors"]


def test_leftovers_of_killed_writes_are_invisible_and_removable(tmp_path):
    session = Session(str(tmp_path), "s")
    session.write_bytes("a.txt", b"a")
    (tmp_path / "s" / "b.txt.tmp-0123abcd").write_bytes(b"partial")
    assert session.list(".") == ["a.txt"]
    session.remove_temporary()
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["a.txt"]
