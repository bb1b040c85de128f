"""Whether a weights file is whole and what it claims to be, told from its first bytes and its
header alone: no tensor is read, so a multi-gigabyte file is judged in milliseconds.

- `.safetensors`: an 8-byte header length, a JSON header that fits in the file, and tensors
  that fit in it too (a file that ends early was cut off in a copy or a download).
- `.ckpt` (torch.save): a zip archive (PyTorch >= 1.6), whose directory sits at its end and so
  is found only in a whole file, or an older plain pickle (it starts with the pickle protocol
  byte).

Anything else, such as the web page a site sends instead of a file (a login or an error
page), is named for what it looks like. safetensors' own reader would say "header too large"
and torch's that the file may hide code: true of no such page.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

# safetensors refuses larger headers (MAX_HEADER_SIZE in its Rust source).
MAX_HEADER_BYTES = 100_000_000
_PICKLE_PROTOCOLS = range(2, 6)
_HEAD_BYTES = 256  # enough to tell a web page or text from a binary file
_STOPPED_EARLY = "truncated: a copy or download that stopped early"


class WeightsFileProblem(Exception):
    """What is wrong with a weights file, as a phrase for the caller's message ("it is ...")."""


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """{tensor name: shape} from a .safetensors header, or WeightsFileProblem when the file is
    not a whole safetensors file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as file:
        head = file.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        if len(head) < 8 or length > MAX_HEADER_BYTES:
            raise WeightsFileProblem(_not_safetensors(head + file.read(_HEAD_BYTES), size))
        if length > size - 8:
            raise WeightsFileProblem(f"cut off: its header alone takes {length:,} bytes but the "
                                     f"file holds {size - 8:,} after its length ({_STOPPED_EARLY})")
        try:
            header = json.loads(file.read(length))
        except ValueError:
            raise WeightsFileProblem("not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise WeightsFileProblem("not a safetensors file: its header is not a JSON object")
    tensors = {name: entry for name, entry in header.items() if name != "__metadata__"}
    try:
        end = max((int(entry["data_offsets"][1]) for entry in tensors.values()), default=0)
        shapes = {name: [int(n) for n in entry["shape"]] for name, entry in tensors.items()}
    except (KeyError, IndexError, TypeError, ValueError):
        raise WeightsFileProblem("not a safetensors file: its header does not list tensors") from None
    held = size - 8 - length
    if end > held:
        raise WeightsFileProblem(f"cut off: its header lists {end:,} bytes of tensors but the file "
                                 f"holds {held:,} ({_STOPPED_EARLY})")
    return shapes


def weights_file_problem(path: Path, suffix: str | None = None) -> str | None:
    """None when `path` looks like a whole .safetensors or .ckpt file (by `suffix`, else its own),
    else what it is instead, as a phrase ("not a safetensors file but an HTML page (...)")."""
    path = Path(path)
    if (suffix or path.suffix).lower() == ".safetensors":
        try:
            safetensors_shapes(path)
        except WeightsFileProblem as problem:
            return str(problem)
        return None
    return _ckpt_problem(path)


def _ckpt_problem(path: Path) -> str | None:
    with open(path, "rb") as file:
        head = file.read(_HEAD_BYTES)
    if head.startswith(b"PK\x03\x04"):
        # zipfile finds the archive's directory at the end of the file: a cut-off file has none.
        return None if zipfile.is_zipfile(path) else ("a zip archive (the form torch.save writes) "
                                                      f"that is cut off ({_STOPPED_EARLY})")
    if len(head) >= 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS:
        return None  # a pickle from before PyTorch 1.6: read later with weights_only=True
    text = _as_text(head)
    if text is not None:
        return f"not a PyTorch checkpoint but {text}"
    return ("not a PyTorch checkpoint: neither a zip archive (what torch.save writes) nor a pickle "
            f"(it starts with bytes {head[:8].hex(' ')})")


def _not_safetensors(head: bytes, size: int) -> str:
    if size < 8:
        return f"not a safetensors file: it holds only {size} bytes"
    text = _as_text(head)
    if text is not None:
        return f"not a safetensors file but {text}"
    return "not a safetensors file: its first 8 bytes do not give a header length"


def _as_text(head: bytes) -> str | None:
    """'an HTML page (it starts with ...)' or 'text (...)' when the first bytes read as text."""
    sample = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not sample:
        return "an empty file" if not head else "blank text"
    text = sample.decode("utf-8", errors="ignore")
    # binary, bar a character cut in two
    if b"\x00" in sample or len(text.encode()) < len(sample) - 3:
        return None
    if any(not (c.isprintable() or c in "\t\r\n") for c in text):
        return None
    lowered = text.lower()
    kind = "an HTML page" if lowered.startswith(("<!doctype html", "<html")) or "<html" in lowered else (
        "an XML document" if lowered.startswith("<?xml") else "text")
    start = " ".join(text.split())[:60]
    return f"{kind} (it starts with {start!r})"
