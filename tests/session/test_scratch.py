"""Working folders of the export and snapshots: on the session's own disk, or named after their
process in the temp folder; what a killed run left is removed by the next one."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from filesystems import small_tmpfs

from dreambooth_core.errors import StorageError
from dreambooth_core.session.folder import Session
from dreambooth_core.session.scratch import scratch_folder


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_on_local_storage_the_folder_is_in_the_session_and_a_killed_runs_is_removed(tmp_path):
    session = Session(str(tmp_path), "s")
    leftover = tmp_path / "s" / "export.tmp-0123abcd"  # as a SIGKILL during an export leaves it
    (leftover / "diffusers").mkdir(parents=True)
    before = set(Path(tempfile.gettempdir()).glob("dreambooth-export-*"))
    with scratch_folder(session, "export") as folder:
        assert folder.parent == tmp_path / "s" and folder.name.startswith("export.tmp-")
        assert not leftover.exists()
        (folder / "model.safetensors").write_bytes(b"x")
    assert not folder.exists()
    assert set(Path(tempfile.gettempdir()).glob("dreambooth-export-*")) == before


def test_for_object_stores_a_dead_processs_folder_is_removed_a_live_ones_kept(tmp_path):
    session = Session("memory://scratch-test", "s")
    temp = Path(tempfile.gettempdir())
    dead, live = temp / f"dreambooth-export-{dead_pid()}-0123abcd", temp / f"dreambooth-export-{os.getppid()}-0123abcd"
    for folder in (dead, live):
        folder.mkdir()
    try:
        with scratch_folder(session, "export") as folder:
            assert folder.parent == temp and folder.name.startswith(f"dreambooth-export-{os.getpid()}-")
        assert not dead.exists() and live.exists() and not folder.exists()
    finally:
        for folder in (dead, live):
            if folder.exists():
                folder.rmdir()


def test_no_space_while_assembling_is_a_storage_error(tmp_path):
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        if disk is None:
            pytest.skip("cannot mount a small tmpfs here (not root or no CAP_SYS_ADMIN); the "
                        "checkpoint test injects ENOSPC instead")
        session = Session(str(disk), "s")
        with pytest.raises(StorageError, match="no space left on the session storage .* while "
                                               "writing the export files"):
            with scratch_folder(session, "export") as folder:
                (folder / "model.ckpt").write_bytes(b"\0" * (2 << 20))
        assert [p.name for p in (disk / "s").iterdir()] == []  # the partial file is gone
