"""One writer per session: a lease object `lease.json` in the session folder.

A run creates the lease (create-only), renews it from a background thread
while it works, and deletes it when done. Another run may take it over only
once it has expired, or at once when its holder is a process of this machine
that no longer exists (a killed run, rerun on the same machine). Every write
is a compare-and-swap against the version that was read, so two runs can never
both believe they hold it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

from dreambooth_core.errors import SessionBusyError
from dreambooth_core.session.folder import Session
from dreambooth_core.session.lease_object import lease_object
from dreambooth_core.session.paths import LEASE_FILE
from dreambooth_core.session.processes import pid_alive

DEFAULT_TTL = 60.0  # seconds a lease lives without renewal
POLL = 2.0  # seconds between attempts while waiting for another run
_HELD: dict[str, "SessionLease"] = {}  # session root -> the lease this process holds on it


@dataclass(frozen=True)
class Holder:
    id: str
    host: str
    pid: int
    expires_at: float

    def describe(self) -> str:
        left = self.expires_at - time.time()
        when = time.strftime("%H:%M:%S UTC", time.gmtime(self.expires_at))
        return (f"process {self.pid} on {self.host}, lease expires at {when} "
                f"({'in %.0f s' % left if left > 0 else 'expired'}) unless renewed")

    def is_dead(self, now: float) -> bool:
        return self.expires_at <= now or (self.host == socket.gethostname() and not pid_alive(self.pid))


class SessionLease:
    """Context manager: hold the session's lease for the duration of a run."""

    def __init__(self, session: Session, ttl: float = DEFAULT_TTL, wait: float = 0.0,
                 log: logging.Logger | None = None):
        self.session, self.ttl, self.wait = session, ttl, wait
        self.log = log or logging.getLogger("dreambooth")
        self.object = lease_object(session, LEASE_FILE)
        self.id = uuid.uuid4().hex
        self.version = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "SessionLease":
        self.acquire()
        self._thread = threading.Thread(target=self._renew_until_stopped, daemon=True,
                                        name=f"lease {self.session.name}")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        try:
            self.release()
        except OSError as error:  # e.g. the storage turned read-only: the run's own error says so
            self.log.warning("Could not release the lease on session %s (%s); it expires in %.0f s",
                             self.session.name, error, self.ttl)

    def _mine(self) -> bytes:
        holder = Holder(id=self.id, host=socket.gethostname(), pid=os.getpid(),
                        expires_at=time.time() + self.ttl)
        return json.dumps(asdict(holder)).encode()

    def acquire(self) -> None:
        """Take the lease, waiting up to `self.wait` seconds for another holder to finish."""
        self.session.fs.makedirs(self.session.root, exist_ok=True)
        deadline = time.monotonic() + self.wait
        while True:
            holder = self._try_take()
            if holder is None:
                return
            if time.monotonic() >= deadline:
                raise SessionBusyError(
                    f"session {self.session.name!r} ({self.session.url}) is being trained by another "
                    f"run: {holder.describe()}. Wait for that run to finish, or pass --lease-wait "
                    "SECONDS to wait for it; a run that was killed frees the session when its lease "
                    "expires.")
            self.log.info("Session %s is held by %s; waiting", self.session.name, holder.describe())
            time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))

    def check_still_held(self) -> None:
        """Raise SessionBusyError if another run has taken the lease over (call before a commit)."""
        current = self.object.read()
        holder = _parse(current[0]) if current else None
        if holder is None or holder.id != self.id:
            self.lost.set()
            raise SessionBusyError(
                f"session {self.session.name!r} ({self.session.url}) was taken over by another run"
                f"{': ' + holder.describe() if holder else ''} while this one was training (its "
                "lease was not renewed in time). This run stops without committing; the other "
                "run continues the session.")

    def _try_take(self) -> Holder | None:
        """None when the lease is now ours; otherwise the live holder."""
        current = self.object.read()
        if current is None:
            self.version = self.object.create(self._mine())
        else:
            holder = _parse(current[0])
            if holder is not None and not holder.is_dead(time.time()):
                return holder
            self.version = self.object.replace(self._mine(), current[1])
            if self.version is not None and holder is not None:
                self.log.warning("Took over session %s from %s", self.session.name, holder.describe())
        if self.version is not None and self._confirmed():
            _HELD[self.session.root] = self
            return None
        return self._try_take()  # lost a race: look again

    def _confirmed(self) -> bool:
        """Read back: on a store that ignored the precondition, a racing writer shows here."""
        current = self.object.read()
        holder = _parse(current[0]) if current else None
        return holder is not None and holder.id == self.id

    def renew(self) -> bool:
        current = self.object.read()  # a store that ignores preconditions still shows a takeover here
        holder = _parse(current[0]) if current else None
        version = None
        if holder is not None and holder.id == self.id:
            version = self.object.replace(self._mine(), current[1])
        if version is None:
            self.lost.set()
            self.log.error("Lost the lease on session %s: another run took it over. This run's "
                           "checkpoints may be overwritten; stop it.", self.session.name)
            return False
        self.version = version
        return True

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.renew():
                    return
            except Exception as exc:  # noqa: BLE001 - a transient storage error: try again next time
                self.log.warning("Could not renew the lease on session %s (%s); retrying",
                                 self.session.name, exc)

    def release(self) -> None:
        if _HELD.get(self.session.root) is self:
            del _HELD[self.session.root]
        if self.version is not None and not self.lost.is_set():
            self.object.delete(self.version)
            self.version = None


def check_lease(session: Session) -> None:
    """Before a commit: refuse if this process held the session's lease and lost it."""
    lease = _HELD.get(session.root)
    if lease is not None:
        lease.check_still_held()


def _parse(data: bytes) -> Holder | None:
    try:
        return Holder(**json.loads(data))
    except (ValueError, TypeError):
        return None  # unreadable: treated as expired
