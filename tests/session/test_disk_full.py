"""No space left: a checkpoint that does not fit is not committed, its leftovers are removed at
once, the committed ones stay, and the same save works once there is room again."""

import errno

import pytest
import torch
from filesystems import fill, small_tmpfs

from dreambooth_core.errors import StorageError
from dreambooth_core.session import checkpoints as checkpoint_module
from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.folder import Session

STATE = {"weights": torch.arange(64 * 1024, dtype=torch.float32)}  # 256 KB, through torch.save


def writers() -> dict:
    return {"optimizer.pt": lambda f: torch.save(STATE, f)}


@pytest.fixture
def storage(tmp_path, monkeypatch):
    """A 2 MB filesystem, with a `make_full(bool)` switch; ENOSPC injected where none can be mounted."""
    with small_tmpfs(tmp_path / "disk", "2m") as mounted:
        if mounted is not None:
            filler = []

            def make_full(full: bool) -> None:
                if full:
                    filler.append(fill(mounted, leave=64 * 1024))
                else:
                    filler.pop().unlink()
            yield mounted, make_full
            return
        state = {"full": False}
        original = checkpoint_module._HashingFile.write

        def write(self, data):
            if state["full"]:
                self.failure = OSError(errno.ENOSPC, "No space left on device")
                raise self.failure
            return original(self, data)
        monkeypatch.setattr(checkpoint_module._HashingFile, "write", write)
        yield tmp_path / "disk", lambda full: state.update(full=full)


def test_a_checkpoint_that_does_not_fit_is_a_storage_error_and_the_committed_one_stays(storage):
    root, make_full = storage
    store = CheckpointStore(Session(str(root), "s"))
    store.save(2, writers(), meta={})

    make_full(True)
    with pytest.raises(StorageError) as raised:
        store.save(4, writers(), meta={})
    message = str(raised.value)
    assert message.startswith("the checkpoint at step 4 was not committed (the latest committed one "
                              "is step 2, intact): no space left on the session storage")
    assert "run the same command again" in message
    assert store.latest_step() == 2 and store.load_latest().step == 2
    assert [p.name for p in (root / "s" / "checkpoints").iterdir()] == ["step-000002"]  # no leftover

    make_full(False)
    store.save(4, writers(), meta={})
    assert store.committed_steps() == [2, 4]
