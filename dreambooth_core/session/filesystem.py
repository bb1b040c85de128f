"""An fsspec filesystem for a storage URL, with options and credentials given in-process."""

from __future__ import annotations

import os
from typing import Any

import fsspec


def filesystem_for(url: str, options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path of `url`. `options` (credentials included) go to fsspec only."""
    options = dict(options or {})
    if url.startswith(("gs://", "gcs://")):
        # gcsfs reads this when imported; left on, it waits 60 s per bucket for a gRPC probe.
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        if _emulator_host():
            # Like Google's client libraries: an emulator takes no credentials.
            options["token"] = "anon"
    return fsspec.core.url_to_fs(url, **options)


def _emulator_host() -> bool:
    return os.environ.get("STORAGE_EMULATOR_HOST", "") not in ("", "default")
