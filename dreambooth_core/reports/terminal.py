"""Progress bars on the terminal (tqdm), only when stderr is one; nothing otherwise,
so logs and CI output keep plain lines."""

from __future__ import annotations

import os
import sys
from typing import TextIO


class NoBar:
    """Stands in for a bar when there is no terminal."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def clear(self) -> None:
        pass

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def shows_bars(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    if os.environ.get("DREAMBOOTH_PROGRESS_BARS", "").lower() in {"0", "false", "no"}:
        return False
    return hasattr(stream, "isatty") and stream.isatty()


def progress_bar(total: int | None, description: str, initial: int = 0, unit: str = "step",
                 stream: TextIO | None = None):
    """A tqdm bar on `stream` (stderr) when it is a terminal, else a NoBar.

    unit="B" shows bytes with k/M/G prefixes."""
    stream = stream or sys.stderr
    if not shows_bars(stream):
        return NoBar()
    from tqdm import tqdm

    columns, rows = _size(stream)
    sized = columns > 0 and rows > 0  # a terminal that reports no size (a bare pty) gets 100x24:
    # tqdm would otherwise draw an empty bar, or hide it as off-screen
    return tqdm(total=total, initial=initial, desc=description, unit=unit, file=stream,
                unit_scale=unit == "B", unit_divisor=1024 if unit == "B" else 1000,
                dynamic_ncols=sized, ncols=None if sized else 100, nrows=None if sized else 24,
                leave=True)


def _size(stream: TextIO) -> tuple[int, int]:
    try:
        return tuple(os.get_terminal_size(stream.fileno()))
    except (AttributeError, OSError, ValueError):
        return 0, 0
