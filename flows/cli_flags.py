"""What the `dreambooth` commands share: flag names, the settings they come from, and the
session and base model that storage flags name."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from dreambooth_core.config import (
    SECTION_OF,
    SECTIONS,
    DreamBoothConfig,
    GenerationSettings,
    TrainingSettings,
)
from dreambooth_core.errors import ConfigError
from dreambooth_core.session.folder import Session
from dreambooth_core.session.state import existing_state
from dreambooth_core.session.storage import open_named_session, process_local, storage_location
from flows.quiet_libraries import quiet_libraries


# Settings whose flag is not their name: a setting may not share its section's name.
FLAGS = {"caption_mode": "--captions"}


def flag_name(name: str) -> str:
    return FLAGS.get(name) or "--" + name.replace("_", "-")


def setting(name: str) -> FieldInfo:
    """The declaration of setting `name` in its section of DreamBoothConfig."""
    return SECTIONS[SECTION_OF[name]].model_fields[name]


def invalid_settings(exc: ValidationError, flags: dict[str, str] | None = None) -> ConfigError:
    """One error for what a settings model refused, each problem led by its flag and the value
    given. `flags`: setting -> the command's own flag where it is not the setting's name."""
    return ConfigError(f"invalid settings: {'; '.join(_problem(e, flags or {}) for e in exc.errors())}.")


def _problem(error: dict, flags: dict[str, str]) -> str:
    """One validation error; one about several settings of a section (its own message names
    their flags) without a flag."""
    message = error["msg"].removeprefix("Value error, ")
    names = [str(part) for part in error["loc"]]
    known = SECTION_OF.keys() | GenerationSettings.model_fields.keys() | flags.keys() | {"session"}
    name = next((n for n in reversed(names) if n in known), None)
    if name is None:
        return message
    given = f" {error['input']}" if names[-1] == name and not isinstance(error["input"], dict) else ""
    return f"{flag_name(flags.get(name, name))}{given}: {message}"


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
        use_flag_blocks()
    return storage_location(storage, storage_block)


def use_flag_blocks() -> None:
    """Register how a --storage-block opens storage, once Prefect's server is known to be set."""
    from flows.temporary_server import require_configured_server

    require_configured_server("blocks are then read from Prefect's own database in PREFECT_HOME")
    from flows.session_storage import use_blocks

    use_blocks()


def warn_if_process_local(storage: str) -> None:
    if process_local(storage):
        print(f"warning: --storage {storage} keeps the session in this process's memory: its checkpoints "
              "and outputs end when the command does. Pass a folder or a gs:// bucket to keep them.",
              file=sys.stderr)


def refuse_process_local_storage(storage: str, command: str) -> None:
    if process_local(storage):
        raise ConfigError(f"--storage {storage} lives in this process's memory only: the run that "
                          f"{command} starts (another process) would not find the session. Pass a "
                          "folder or a gs:// bucket that it can reach too.")


def open_flag_session(flags: dict[str, Any]) -> Session:
    """The session the flags name, opened once for the process (the flow a command runs here
    finds it open)."""
    storage, block = flags.get("storage", setting("storage").default), flags.get("storage_block")
    if block:
        use_flag_blocks()
    session = open_named_session(storage, block, flags["session"])
    session.forget_checks()  # each command checks afresh
    return session


def check_device(name: str) -> None:
    """--device against what torch can use on this machine, before any server starts (`upload`
    leaves it to the worker that trains). auto and cpu always exist: torch, a second or two to
    import, is loaded only to check another name."""
    if name not in ("auto", "cpu"):
        from dreambooth_core.training.devices import resolve_device

        resolve_device(name)


def check_base_precision(training: TrainingSettings, device_name: str) -> None:
    """--base-precision against the device, its library and the method, before any server starts
    (torch is imported only to resolve a device other than cpu). A --memory auto plan's choice is
    checked at the plan."""
    if training.base_precision == "auto":
        return
    from dreambooth_core.families.quantised import check_base_precision as check

    if device_name == "cpu":
        precision = "no" if training.mixed_precision == "auto" else training.mixed_precision  # as resolved
        check(training.base_precision, training.method, "cpu", precision)
        return
    from dreambooth_core.training.devices import resolve_device, resolve_precision

    device = resolve_device(device_name)
    precision = resolve_precision(training.mixed_precision, device)
    check(training.base_precision, training.method, str(device), precision)


def check_device_settings(config: DreamBoothConfig) -> None:
    """The precisions and --offload against this machine's device, before any server starts
    (devices.check_device_settings): torch is imported only for settings a device may lack."""
    training, runtime = config.training, config.runtime
    if training.base_precision != "auto" or training.mixed_precision == "bf16" or runtime.offload:
        from dreambooth_core.training.devices import check_device_settings as check, resolve_device

        check(training.mixed_precision, training.base_precision, runtime.offload, training.gpus,
              resolve_device(runtime.device))


def trained_session_config(flags: dict[str, Any]) -> tuple[Session, DreamBoothConfig]:
    """The session the flags name and its stored configuration; an error if there is none, or if
    the session cannot take the files the command writes into it."""
    session = open_flag_session(flags)
    config = existing_state(session).config
    session.check_writable()
    return session, config


def trained_base_model(config: DreamBoothConfig, session: Session):
    """The base model the session was trained on, as train fetches it (a LocalModel)."""
    from dreambooth_core.export.step_export import require_trained_model
    from dreambooth_core.model.cache import model_cache_dir
    from dreambooth_core.families.base_model import fetch_base

    quiet_libraries()
    base = config.base_model
    model = fetch_base(base, model_cache_dir(), hf_token=os.environ.get("HF_TOKEN"))
    require_trained_model(session, model.digest, base.model)
    return model
