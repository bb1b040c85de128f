"""A real full filesystem for tests: a small tmpfs where this process may mount one.

`small_tmpfs` yields None where mounting is not allowed (not root, no
CAP_SYS_ADMIN, no tmpfs); tests then inject ENOSPC instead and say so.
"""

import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path | None]:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        yield None
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        yield path if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def resize(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def set_read_only(path: Path, read_only: bool) -> None:
    """Remount the filesystem at `path` read-only (writes fail with EROFS), or read-write again."""
    subprocess.run(["mount", "-o", f"remount,{'ro' if read_only else 'rw'}", str(path)], check=True)


def fill(path: Path, leave: int = 0) -> Path:
    """Take all but `leave` bytes of the filesystem at `path` with one file."""
    filler = path / "filler"
    free = shutil.disk_usage(path).free - leave
    with open(filler, "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(0, free))
    return filler
