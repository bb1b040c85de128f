"""Sessions and checkpoints on gs:// (a GCS emulator): nothing partial is ever visible."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreambooth_core.session.checkpoints import CheckpointStore
from dreambooth_core.session.folder import Session

REPO = Path(__file__).resolve().parents[2]
BIG = b"x" * (3 << 20)  # over gcsfs's 256 KiB block: sent as a resumable upload in parts


def test_files_round_trip_through_the_bucket(gcs_bucket):
    session = Session(f"{gcs_bucket}/sessions", "shrk")
    session.write_json("session.json", {"status": "new"})
    session.write_bytes("photos/a.bin", BIG)
    assert Session(f"{gcs_bucket}/sessions", "shrk").read_json("session.json") == {"status": "new"}
    assert session.url == f"gs://{gcs_bucket[5:]}/sessions/shrk"
    assert session.list("photos") == ["a.bin"]


def test_a_write_that_fails_halfway_leaves_no_object(gcs_bucket):
    session = Session(f"{gcs_bucket}/sessions", "shrk")

    def fail_halfway(f):
        f.write(BIG[: len(BIG) // 2])
        f.flush()  # parts of the upload have reached the bucket
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        session.write_with("model.ckpt", fail_halfway)
    session.fs.invalidate_cache()
    assert not session.exists("model.ckpt")


def test_a_process_killed_during_an_upload_leaves_no_object(gcs_bucket):
    script = ("import os, signal, sys\n"
              "from dreambooth_core.session.folder import Session\n"
              "def die_halfway(f):\n"
              f"    f.write(b'x' * {len(BIG) // 2}); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
              f"Session({gcs_bucket + '/sessions'!r}, 'shrk').write_with('model.ckpt', die_halfway)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, result.stderr[-2000:]
    session = Session(f"{gcs_bucket}/sessions", "shrk")
    assert session.list(".") == []


def commit_in_another_process(storage: str, step: int) -> None:
    script = ("from dreambooth_core.session.folder import Session\n"
              "from dreambooth_core.session.checkpoints import CheckpointStore\n"
              f"CheckpointStore(Session({storage!r}, 'shrk'), keep=3).save({step}, "
              "{'weights.bin': lambda f: f.write(b'w' * 1000)}, meta={})\n")
    subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                   check=True, timeout=120)


def test_latest_checkpoint_sees_a_commit_made_elsewhere(gcs_bucket):
    storage = f"{gcs_bucket}/sessions"
    session = Session(storage, "shrk")
    store = CheckpointStore(session)
    store.save(4, {"weights.bin": lambda f: f.write(b"w" * 1000)}, meta={})
    session.write_bytes("checkpoints/step-000008/weights.bin", b"partial")  # a run killed mid-commit
    assert store.latest_step() == 4
    assert session.list("checkpoints/step-000008") == ["weights.bin"]  # this listing is now cached
    commit_in_another_process(storage, 8)  # the next run commits step 8
    assert store.latest_step() == 8
    assert store.load_latest().files["weights.bin"] == b"w" * 1000


def test_files_without_their_manifest_are_not_a_checkpoint(gcs_bucket):
    session = Session(f"{gcs_bucket}/sessions", "shrk")
    store = CheckpointStore(session)
    store.save(4, {"weights.bin": lambda f: f.write(b"a" * 100)}, meta={})
    session.write_bytes("checkpoints/step-000008/weights.bin", b"b" * 100)  # killed before its manifest
    assert store.latest_step() == 4
    store.save(12, {"weights.bin": lambda f: f.write(b"c" * 100)}, meta={})
    assert session.list("checkpoints") == ["step-000004", "step-000012"]  # the leftover is cleaned up
