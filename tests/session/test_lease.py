"""One writer per session: the lease object, on local disk and on gs:// (GCS emulator)."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dreambooth_core.errors import SessionBusyError
from dreambooth_core.session.folder import Session
from dreambooth_core.session.lease import SessionLease
from dreambooth_core.session.paths import LEASE_FILE

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["local", "gcs"])
def storage(request, tmp_path):
    return str(tmp_path / "sessions") if request.param == "local" else f"{request.getfixturevalue('gcs_bucket')}/sessions"


def test_a_second_holder_is_refused_with_the_holder_and_expiry(storage):
    with SessionLease(Session(storage, "shrk"), ttl=30):
        with pytest.raises(SessionBusyError) as refused:
            SessionLease(Session(storage, "shrk"), ttl=30).acquire()
    message = str(refused.value)
    assert "session 'shrk'" in message and "is being trained by another run" in message
    assert "lease expires at" in message and "--lease-wait" in message


def test_the_lease_is_free_again_after_its_holder_finishes(storage):
    with SessionLease(Session(storage, "shrk")):
        pass
    assert not Session(storage, "shrk").exists(LEASE_FILE)
    with SessionLease(Session(storage, "shrk")):
        assert Session(storage, "shrk").exists(LEASE_FILE)


def test_a_waiting_run_gets_the_lease_when_the_holder_lets_go(storage):
    first = SessionLease(Session(storage, "shrk"), ttl=30)
    first.acquire()
    waiting = SessionLease(Session(storage, "shrk"), ttl=30, wait=20)
    began = time.monotonic()
    threading.Timer(2.0, first.release).start()
    waiting.acquire()
    assert 1.5 < time.monotonic() - began < 15
    waiting.release()


@pytest.mark.slow
def test_renewal_keeps_the_lease_past_its_time_to_live(storage):
    with SessionLease(Session(storage, "shrk"), ttl=1.5):
        time.sleep(3)
        with pytest.raises(SessionBusyError):
            SessionLease(Session(storage, "shrk")).acquire()


def test_an_expired_lease_is_taken_over_and_its_old_holder_notices(storage):
    stale = SessionLease(Session(storage, "shrk"), ttl=1)
    stale.acquire()  # never renewed: a run on a machine that vanished
    time.sleep(1.5)
    with SessionLease(Session(storage, "shrk"), ttl=30) as taker:
        holder = json.loads(Session(storage, "shrk").read_bytes(LEASE_FILE))
        assert holder["id"] == taker.id
        assert not stale.renew() and stale.lost.is_set()
        stale.release()  # a lost lease is not deleted: it belongs to the taker now
        assert Session(storage, "shrk").exists(LEASE_FILE)


def test_a_run_that_lost_its_lease_does_not_commit_a_checkpoint(storage):
    from dreambooth_core.session.checkpoints import CheckpointStore

    session = Session(storage, "shrk")
    stale = SessionLease(session, ttl=1)
    stale.acquire()  # its renewals stopped (a long network outage)
    time.sleep(1.5)
    take_over = ("from dreambooth_core.session.folder import Session\n"
                 "from dreambooth_core.session.lease import SessionLease\n"
                 f"SessionLease(Session({storage!r}, 'shrk'), ttl=30).acquire()\n")
    subprocess.run([sys.executable, "-c", take_over], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                   check=True, timeout=120)  # another run (a process of its own) takes the session
    with pytest.raises(SessionBusyError, match="was taken over by another run"):
        CheckpointStore(session).save(4, {"weights.bin": lambda f: f.write(b"w" * 100)}, meta={})
    assert CheckpointStore(Session(storage, "shrk")).latest_step() == 0
    stale.release()
