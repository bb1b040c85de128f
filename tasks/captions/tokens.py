"""The identifier token a user names their photos with, and the caption built from it."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from tasks.errors import DatasetError

# "shrk (1)", "shrk(2)", "shrk_3", "shrk-4", "shrk 5" -> "shrk"; "r2d2" stays whole.
_NUMBER_SUFFIX = re.compile(r"(?:\s*\(\d+\)|[\s_-]+\d+)$")


def token_from_filename(name: str) -> str:
    token = _NUMBER_SUFFIX.sub("", PurePosixPath(name).stem).strip()
    if not any(c.isalnum() for c in token):
        raise DatasetError(f"{name}: no identifier in the file name. Name photos after the "
                           "subject's identifier, e.g. 'shrk (1).jpg', or pass --token.")
    return token


def caption(template: str, token: str) -> str:
    return template.replace("{token}", token)
