"""A real "permission denied" for a subprocess, also when the tests run as root.

Root reads a chmod 000 file through the capabilities CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH. A child that drops both from its bounding set before exec
starts the new program without them, so the file's mode binds it as it binds any
user; nothing else about the process changes (same uid, same files).
"""

import ctypes
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _drop_file_overrides() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def bound_by_permissions() -> Callable[[], None] | None:
    """The `preexec_fn` for subprocesses that must obey file modes (None: they already do)."""
    return _drop_file_overrides if os.geteuid() == 0 else None


def deny_reading(path: Path) -> None:
    """chmod 000 `path`, and skip the test if a subprocess can still read it (no way to drop
    root's overrides here, e.g. without CAP_SETPCAP)."""
    path.chmod(0)
    _skip_unless_denied(path, "import os, sys; p = sys.argv[1]; "
                              "os.listdir(p) if os.path.isdir(p) else open(p, 'rb')")


def deny_writing(folder: Path) -> None:
    """chmod 555 `folder` (readable, nothing can be created in it), and skip the test if a
    subprocess can still create a file there."""
    folder.chmod(0o555)
    _skip_unless_denied(folder, "import os, sys; open(os.path.join(sys.argv[1], '.probe'), 'wb')")


def _skip_unless_denied(path: Path, probe: str) -> None:
    try:
        result = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True,
                                text=True, preexec_fn=bound_by_permissions())
    except subprocess.SubprocessError as exc:
        pytest.skip(f"cannot start a process bound by file permissions: {exc}")
    if "PermissionError" not in result.stderr:
        pytest.skip("this process reads and writes files whatever their mode (root without a way to "
                    "drop its capabilities), so a permission error cannot be made here")
