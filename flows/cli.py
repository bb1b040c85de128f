"""The `dreambooth` command."""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from typing import Any, Literal

from pydantic import ValidationError

from tasks.config import DreamBoothConfig
from tasks.errors import ConfigError, DreamBoothError
from tasks.session import Session
from tasks.session_state import stored_config

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per DreamBoothConfig field, with its description and default."""
    for name, field in DreamBoothConfig.model_fields.items():
        kind = _base_type(field.annotation)
        options: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
        if typing.get_origin(kind) is Literal:
            options["choices"] = typing.get_args(kind)
        elif kind in (int, float):
            options["type"] = kind
        default = "" if field.is_required() else f" (default: {field.default})"
        parser.add_argument(_flag(name), help=field.description + default,
                            required=field.is_required(), **options)


def _base_type(annotation: Any) -> Any:
    """`int | None` -> int."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreambooth", description="Personalise Stable Diffusion "
                                     "with a few photos of a subject (DreamBooth), resumably.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="Train a session (new or resumed) and export it.",
                                description="Train a session; rerun the same command to resume.")
    _add_config_flags(train)
    return parser


def config_from_flags(flags: dict[str, Any]) -> DreamBoothConfig:
    """The session's stored configuration updated with the flags given now."""
    storage = flags.get("storage", DreamBoothConfig.model_fields["storage"].default)
    stored = stored_config(Session(storage, flags["session"])) or {}
    stored.pop("photos", None)  # where photos came from, not a setting: the session has copies
    try:
        return DreamBoothConfig(**{**stored, **flags})
    except ValidationError as exc:
        problems = "; ".join(f"{_flag(str(e['loc'][0]))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid settings: {problems}.") from None


def _quiet_libraries() -> None:
    """Library chatter (progress bars, dtype notes) would drown the pipeline's own log."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()


def train(flags: dict[str, Any]) -> int:
    _quiet_libraries()
    from flows.dreambooth import dreambooth_train
    from flows.quiet_errors import hide_user_error_tracebacks

    config = config_from_flags(flags)
    hide_user_error_tracebacks()
    result = dreambooth_train(config)
    files = ", ".join(result.files)
    print(f"Done: session {config.session!r} trained to step {result.step}; outputs: {files}, diffusers/")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    try:
        return {"train": train}[command](args)
    except DreamBoothError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("Interrupted. Run the same command again to continue from the last committed "
              "checkpoint.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
