"""Local working folders for files assembled before they are placed in a session.

On local storage the folder is inside the session, under a temporary name: on the
disk the files end on, and removed by the next run if a kill left it. For object
stores it is in the system's temporary folder, named after the process, so a
later run removes what a killed one left there.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dreambooth_core.errors import StorageError
from dreambooth_core.session.folder import Session, out_of_space, storage_writes, temporary_name
from dreambooth_core.session.processes import pid_alive


@contextmanager
def scratch_folder(session: Session, purpose: str) -> Iterator[Path]:
    """A new empty local folder for `purpose` ('export', 'snapshot'), removed afterwards;
    a write that fails for want of space there, or that the session's storage refuses, is a
    StorageError saying where."""
    remove_abandoned(session, purpose)
    if session.is_local:
        folder = Path(temporary_name(session.path(purpose)))
        try:  # the error is judged while the folder still takes the space it filled
            with storage_writes(session.storage, f"the {purpose} files", session.root, inside=session.root):
                folder.mkdir(parents=True)
                yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    folder = Path(tempfile.gettempdir()) / f"dreambooth-{purpose}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    try:
        yield folder
    except Exception as exc:
        if not isinstance(exc, StorageError) and out_of_space(exc, str(folder)):
            raise StorageError(
                f"no space left in the temporary folder {folder.parent} while writing the {purpose} "
                "files. Free space there, or set TMPDIR to a folder with room, and run the same "
                "command again: everything committed before is kept.") from exc
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_abandoned(session: Session, purpose: str) -> None:
    """What a killed run left: the session's own leftovers, or those of a process that is gone."""
    if session.is_local:
        prefix = f"{posixpath.basename(session.path(purpose))}.tmp-"
        root = Path(session.root)
        leftovers = [p for p in root.glob(f"{prefix}*")] if root.is_dir() else []
    else:
        pattern = re.compile(rf"^dreambooth-{re.escape(purpose)}-(\d+)-[0-9a-f]{{8}}$")
        leftovers = [p for p in Path(tempfile.gettempdir()).glob(f"dreambooth-{purpose}-*")
                     if (m := pattern.match(p.name)) and not pid_alive(int(m.group(1)))]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
