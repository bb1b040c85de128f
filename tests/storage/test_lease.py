"""One writer per session: the lease object, on local disk and on gs:// (GCS emulator)."""

import json
import time

import pytest

from tasks.errors import SessionBusyError
from tasks.session import Session
from tasks.storage.lease import LEASE_FILE, SessionLease


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
    import threading

    threading.Timer(2.0, first.release).start()
    waiting.acquire()
    assert 1.5 < time.monotonic() - began < 15
    waiting.release()


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
