"""The processes of this machine: whether one still runs (a lease's holder, a working folder's
owner), and helper processes that end when the run that started them ends."""

from __future__ import annotations

import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def end_with_parent(parent: int, signum: int = signal.SIGKILL) -> bool:
    """Called in a child process as it starts: have the kernel send it `signum` when its parent
    `parent` dies, however the parent dies (SIGKILL, the out-of-memory killer). Without this, a
    child of a killed run is re-parented to init and runs on for good: a forked worker even keeps
    the dead run's pipes open, so nothing tells it its parent is gone.

    Linux only (prctl(PR_SET_PDEATHSIG)); returns False elsewhere, where the caller must watch
    os.getppid() itself. Ends this process at once if the parent already died before the call.
    The kernel signals when the *thread* that started the child ends: start such children from
    the thread that outlives them (the main thread, or the one that uses them)."""
    armed = False
    if sys.platform.startswith("linux"):
        # ctypes rather than a dependency (python-prctl) for this one system call, which the
        # standard library does not offer.
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(0)
    return armed
