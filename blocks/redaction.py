"""Keep secret values out of every log line, whatever logged them.

Blocks call `remember_secret` when they hand a secret to code in this
process; from then on, a filter on every log handler replaces it with
`**********` in messages, arguments and tracebacks, before Prefect's console
or API handler sees the record.
"""

from __future__ import annotations

import logging
from typing import Any

MASK = "**********"
MIN_LENGTH = 8  # shorter values would mask ordinary words
_SECRETS: set[str] = set()


def remember_secret(value: Any) -> None:
    """Redact `value` (a string, or every string inside a dict/list) from now on."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for item in value:
            remember_secret(item)
        return
    if isinstance(value, str) and len(value) >= MIN_LENGTH:
        _SECRETS.add(value)
        _SECRETS.update(line for line in value.splitlines() if len(line) >= MIN_LENGTH)
        install_redaction()


def redact(text: str) -> str:
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not _SECRETS:
            return True
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactSecrets()


def install_redaction() -> None:
    """Put the filter on every handler that exists now (Prefect's included)."""
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
