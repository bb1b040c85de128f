"""What the `dreambooth` commands share: flag names, the settings they come from, and the
session and base model that storage flags name."""

from __future__ import annotations

import argparse
import os
from typing import Any

from pydantic.fields import FieldInfo

from dreambooth_core.config import SECTION_OF, SECTIONS, DreamBoothConfig
from dreambooth_core.errors import SessionError
from dreambooth_core.session.folder import Session
from dreambooth_core.session.state import stored_config
from dreambooth_core.session.storage import storage_location
from flows.quiet_libraries import quiet_libraries


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def setting(name: str) -> FieldInfo:
    """The declaration of setting `name` in its section of DreamBoothConfig."""
    return SECTIONS[SECTION_OF[name]].model_fields[name]


def add_storage_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default=setting("storage").default,
                        help="Where sessions live, as for train (default: %(default)s).")
    parser.add_argument("--storage-block", default=None,
                        help="A SessionStorage block naming where sessions live, as for train "
                             "(read from the Prefect server at PREFECT_API_URL; default: none).")


def flag_storage(storage: str, storage_block: str | None) -> tuple[str, dict[str, Any]]:
    """(URL, fsspec options) of the storage the flags name; Prefect is imported only for a
    --storage-block (its blocks say how a block name opens storage)."""
    if storage_block:
        import blocks.session_storage  # noqa: F401 - registers the block storage
    return storage_location(storage, storage_block)


def open_flag_session(flags: dict[str, Any]) -> Session:
    """The session the flags name."""
    url, options = flag_storage(flags.get("storage", setting("storage").default), flags.get("storage_block"))
    return Session(url, flags["session"], options)


def trained_session_config(flags: dict[str, Any]) -> tuple[Session, DreamBoothConfig]:
    """The session the flags name and its stored configuration; an error if there is none."""
    session = open_flag_session(flags)
    config = stored_config(session)
    if config is None:
        raise SessionError(f"there is no session {session.name!r} in {session.storage}. Pass the "
                           "--storage it was trained with, or another --session.")
    return session, config


def trained_base_model(config: DreamBoothConfig, session: Session):
    """The base model the session was trained on, as train fetches it (a LocalModel)."""
    from dreambooth_core.export.step_export import require_trained_model
    from dreambooth_core.model.vae import fetch_base
    from tasks.fetch_base_model import model_cache_dir

    quiet_libraries()
    base = config.base_model
    model = fetch_base(base, model_cache_dir(), hf_token=os.environ.get("HF_TOKEN"))
    require_trained_model(session, model.digest, base.model)
    return model
