"""Session paths stay inside the session; writes are all or nothing, and a storage that refuses
them says so."""

import pytest

import dreambooth_core.session.folder
from dreambooth_core.errors import SessionError, StorageError
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.folder import Session
from dreambooth_core.session.scratch import scratch_folder


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


@pytest.fixture
def read_only_storage(tmp_path):
    """A tmpfs holding session 's' with a committed checkpoint at step 2, then remounted read-only."""
    from filesystems import set_read_only, small_tmpfs

    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        if disk is None:
            pytest.skip("cannot mount a tmpfs here to turn read-only")
        session = Session(str(disk), "s")
        CheckpointStore(session).save(2, {"weights.pt": lambda f: f.write(b"w" * 1000)}, meta={})
        set_read_only(disk, True)
        try:
            yield session
        finally:
            set_read_only(disk, False)


def test_writes_to_a_storage_turned_read_only_are_a_storage_error_naming_the_file(read_only_storage):
    session = read_only_storage
    with pytest.raises(StorageError) as raised:
        session.write_json("loss.json", {"loss": 1})
    assert str(raised.value) == (
        f"cannot write to the session storage {session.storage!r}: writing {session.root}/loss.json "
        "failed (Read-only file system); it was mounted or has turned read-only: remount it read-write, or "
        "copy the session to a --storage you can write to. Then run the same command again: everything "
        "committed before is kept.")
    with pytest.raises(StorageError, match="writing .*/s/export failed .Read-only file system"):
        with scratch_folder(session, "export"):
            pass


def test_a_checkpoint_on_a_storage_turned_read_only_is_not_committed_and_the_last_stays(read_only_storage):
    store = CheckpointStore(read_only_storage)
    with pytest.raises(StorageError, match="the checkpoint at step 4 was not committed .the latest committed "
                                           "one is step 2, intact.: cannot write to the session storage"):
        store.save(4, {"weights.pt": lambda f: f.write(b"v" * 1000)}, meta={})
    assert store.latest_step() == 2 and store.load_latest().step == 2
