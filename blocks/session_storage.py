"""Block: where sessions live (a storage URL) and how to reach it (credentials).

Flows get the block's *name*; the credentials are read from Prefect's block
store in the process that opens the storage, handed to fsspec, and never put
in a parameter, a result, a log line or a session file. The block is also the
flow's result storage (`<url>/.prefect-results/`), so a cached task result
written on one machine is found from another.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from prefect.filesystems import WritableFileSystem
from prefect_gcp import GcpCredentials
from pydantic import Field, SecretStr

from blocks.loading import load_block
from blocks.redaction import remember_secret
from dreambooth_core.session.filesystem import filesystem_for
from dreambooth_core.session.folder import open_storage
from dreambooth_core.session.paths import RESULTS_STORE
from dreambooth_core.session.storage import use_block_storage


class SessionStorage(WritableFileSystem):
    """Where DreamBooth sessions live: a folder or fsspec URL, with its credentials."""

    _block_type_name = "DreamBooth Session Storage"
    _block_type_slug = "dreambooth-session-storage"
    _description = "Where DreamBooth sessions live (gs://bucket/prefix, a folder...) and its credentials."

    url: str = Field(description="Where sessions live: a folder, or an fsspec URL such as "
                     "gs://bucket/sessions.")
    gcp_credentials: GcpCredentials | None = Field(
        None, description="Credentials for gs:// URLs (a prefect-gcp GCP Credentials block). "
        "Leave empty to use the machine's default credentials.")
    options: dict[str, Any] = Field(default_factory=dict, description="fsspec options that are "
                                    "not secret, e.g. {\"project\": \"my-project\"}.")
    secret_options: dict[str, SecretStr] = Field(default_factory=dict, description="fsspec "
                                                 "options that are secret (keys, tokens).")

    def storage_options(self) -> dict[str, Any]:
        """fsspec options with the credentials, for use in this process only."""
        options = dict(self.options)
        for key, value in self.secret_options.items():
            options[key] = value.get_secret_value()
            remember_secret(options[key])
        if self.gcp_credentials is not None:
            if self.gcp_credentials.service_account_info is not None:
                remember_secret(self.gcp_credentials.service_account_info.get_secret_value())
            options.setdefault("token", self.gcp_credentials.get_credentials_from_service_account())
            if self.gcp_credentials.project:
                options.setdefault("project", self.gcp_credentials.project)
        return options

    def check(self) -> None:
        """Raise a StorageError naming the URL if the storage cannot be used."""
        open_storage(self.url, self.storage_options())

    # WritableFileSystem: Prefect's task results, under <url>/.prefect-results/.
    def _results(self):
        fs, root = filesystem_for(self.url, self.storage_options())
        return fs, f"{root.rstrip('/')}/{RESULTS_STORE}"

    def _read(self, path: str) -> bytes:
        fs, root = self._results()
        fs.invalidate_cache(f"{root}/{path}")
        return fs.cat_file(f"{root}/{path}")

    def _write(self, path: str, content: bytes) -> None:
        fs, root = self._results()
        fs.makedirs(root, exist_ok=True)
        fs.pipe_file(f"{root}/{path}", content)

    async def aread_path(self, path: str) -> bytes:
        return await asyncio.to_thread(self._read, path)

    async def awrite_path(self, path: str, content: bytes) -> None:
        await asyncio.to_thread(self._write, path, content)

    def read_path(self, path: str, **_sync: bool) -> bytes:  # Prefect passes _sync=True
        return self._read(path)

    def write_path(self, path: str, content: bytes, **_sync: bool) -> None:
        self._write(path, content)


@functools.lru_cache(maxsize=16)
def load_session_storage(name: str) -> SessionStorage:
    """The saved block `name`, read once per process."""
    return load_block(SessionStorage, name, "storage_block")


use_block_storage(load_session_storage)  # how the plain library opens a session named by a block
