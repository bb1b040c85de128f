"""The commit protocol on local disk and on an object-store-like filesystem."""

import logging
import uuid

import pytest

from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import CHECKPOINT_MANIFEST as MANIFEST
from dreambooth_core.session.paths import checkpoint_folder as step_folder


@pytest.fixture(params=["local", "memory"])
def session(request, tmp_path) -> Session:
    storage = str(tmp_path) if request.param == "local" else f"memory://ckpt-{uuid.uuid4().hex}"
    return Session(storage, "s")


def save(store: CheckpointStore, step: int) -> None:
    store.save(step, {"weights.bin": lambda f: f.write(bytes([step]) * 100),
                      "state.bin": lambda f: f.write(b"state %d" % step)}, meta={"step": step})


def test_round_trip(session):
    store = CheckpointStore(session)
    save(store, 5)
    checkpoint = store.load_latest()
    assert checkpoint.step == 5 and checkpoint.meta == {"step": 5}
    assert checkpoint.files["weights.bin"] == bytes([5]) * 100


def test_files_without_a_manifest_are_not_a_checkpoint(session):
    store = CheckpointStore(session)
    save(store, 5)
    session.write_bytes(f"{step_folder(9)}/weights.bin", b"half written")
    assert store.latest_step() == 5
    assert store.load_latest().step == 5


def test_keeps_the_newest_committed_and_cleans_up_the_rest(session):
    store = CheckpointStore(session, keep=2)
    for step in (1, 2, 3):
        save(store, step)
    session.write_bytes(f"{step_folder(2)}/../.tmp-step-000004-deadbeef/weights.bin", b"x")
    save(store, 4)
    assert session.list("checkpoints") == ["step-000003", "step-000004"]


def test_corrupt_latest_falls_back_to_the_previous_and_says_so(session, caplog):
    store = CheckpointStore(session)
    save(store, 1)
    save(store, 2)
    session.write_bytes(f"{step_folder(2)}/weights.bin", bytes([9]) * 100)  # same size
    with caplog.at_level(logging.WARNING, logger="dreambooth"):
        assert store.load_latest().step == 1
    assert "Checkpoint at step 2 is corrupt" in caplog.text
    assert not session.exists(f"{step_folder(2)}/{MANIFEST}")  # uncommitted


def test_load_latest_respects_max_step(session):
    store = CheckpointStore(session, keep=3)
    for step in (4, 8, 12):
        save(store, step)
    assert store.load_latest(max_step=10).step == 8


@pytest.mark.parametrize(("damage", "says"), [
    (lambda s: s.remove(f"{step_folder(2)}/state.bin"), "state.bin is missing"),
    (lambda s: s.write_bytes(f"{step_folder(2)}/weights.bin", b"short"), "weights.bin has the wrong size"),
    (lambda s: s.write_bytes(f"{step_folder(2)}/{MANIFEST}", b'{"step": 2, "files": {'),
     "its MANIFEST.json is damaged"),
])
def test_a_damaged_latest_checkpoint_is_named_and_the_previous_one_used(damage, says, session, caplog):
    """A checkpoint cannot be rebuilt from the session's originals: the previous one is used,
    with a warning naming the step and what is wrong."""
    store = CheckpointStore(session)
    save(store, 1)
    save(store, 2)
    damage(session)
    with caplog.at_level(logging.WARNING, logger="dreambooth"):
        assert store.latest_step() == 1
        assert store.load_latest().step == 1
    assert f"Checkpoint at step 2 is unusable ({says}" in caplog.text
    save(store, 3)  # the next commit cleans the damaged one up
    assert session.list("checkpoints") == ["step-000001", "step-000003"]
