"""Downloading one model file over HTTP(S), resuming a download that was cut off.

The file is streamed into `<name>.part` and renamed when complete, so a file
under its final name is always whole. A later run continues a `.part` with a
Range request; a server that ignores Range sends the whole file again. A file that
fails the caller's check (a web page sent in place of a model) is never kept: not
when it arrives, and not when an earlier version left it in the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from dreambooth_core.errors import ModelError, NetworkError
from dreambooth_core.model.cache import file_lock
from dreambooth_core.reports.terminal import progress_bar

_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
_PROGRESS_EVERY_S = 30.0
_HUB_HOSTS = ("huggingface.co", "hf.co")


def url_filename(url: str) -> str:
    """The file name at the end of the URL's path ('' when there is none)."""
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def download_path(url: str, downloads_dir: Path) -> Path:
    """Where a URL's file lives in the cache: one folder per URL, the file keeps its name."""
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(downloads_dir) / key / url_filename(url)


def download_file(url: str, target: Path, token: str | None = None,
                  log: logging.Logger = logging.getLogger("dreambooth"),
                  check: Callable[[Path], str | None] = lambda path: None) -> Path:
    """Download `url` to `target` unless it is already there; return `target`.

    `check(file)` says what is wrong with a file (None: nothing). A cached file that fails it
    is discarded and downloaded again; a downloaded one that fails it is discarded and refused
    (ModelError naming the cache folder), so the next run asks the server again."""
    target = Path(target)
    # two runs must not append to one .part
    with file_lock(target.with_name(target.name + ".lock")):
        if target.is_file():
            problem = check(target)
            if problem is None:
                log.info("Using %s, downloaded before from %s", target, url)
                return target
            log.warning("%s, downloaded before from %s, is %s; discarded, downloading it again",
                        target, url, problem)
            target.unlink()
        part = _download_to_part(url, target.with_name(target.name + ".part"), token, log)
        problem = check(part)
        if problem is not None:
            part.unlink()
            raise ModelError(
                f"{url} sent a file that is {problem}. It was not kept in the download cache "
                f"({target.parent}), so the next run downloads it again. Check that the link is the "
                "file's direct download link (a site may answer with a login or error page), or "
                "download the file in a browser and pass its local path.")
        part.replace(target)
    log.info("Downloaded %s (%.1f MB)", target, target.stat().st_size / 1e6)
    return target


def _download_to_part(url: str, part: Path, token: str | None, log: logging.Logger) -> Path:
    headers = {"Accept-Encoding": "identity", **_auth_header(url, token)}
    try:
        with httpx.Client(timeout=_TIMEOUT, follow_redirects=True, headers=headers) as client:
            _stream_to_part(client, url, part, log)
    except httpx.HTTPStatusError as exc:
        raise http_status_error(url, exc.response.status_code, exc.response.reason_phrase) from exc
    except httpx.TransportError as exc:
        kept = f" The part downloaded so far is kept in {part}; the next run resumes it." \
            if part.is_file() else ""
        raise NetworkError(
            f"Downloading {url} failed ({type(exc).__name__}: {exc or 'no details'}). "
            f"Check the network and run again.{kept}") from exc
    return part


def http_status_error(url: str, status: int, reason: str = "") -> Exception:
    """The error for an HTTP status: NetworkError when trying later may help, else ModelError."""
    answer = f"HTTP {status} {reason}".strip()
    if status in (401, 403):
        return ModelError(
            f"{url} refused access ({answer}): the file is private or gated. For a Hugging Face "
            "file, accept its terms on the model page and pass a token (hf_token or HF_TOKEN); "
            "otherwise use a link that works without logging in.")
    if status in (404, 410):
        return ModelError(f"{url} was not found ({answer}). Check the link; copy it from the "
                          "model's download button.")
    if status in (408, 429) or status >= 500:
        return NetworkError(f"{url} is busy or failing ({answer}). Try again later.")
    return ModelError(f"{url} answered {answer}. Check the link.")


def is_connection_failure(exc: BaseException) -> bool:
    """True for refused or reset connections, failed name lookups and timeouts, in any HTTP client.

    Hugging Face's offline mode raises a ConnectionError too, but waiting will not help it.
    """
    if type(exc).__name__ == "OfflineModeIsEnabled":
        return False
    return isinstance(exc, (ConnectionError, TimeoutError, *_transport_errors()))


def _transport_errors() -> tuple[type[BaseException], ...]:
    errors = [httpx.TransportError]
    try:
        import httpx2  # what huggingface_hub uses since 1.0
    except ImportError:
        return tuple(errors)
    return (*errors, httpx2.TransportError)


def _stream_to_part(client: httpx.Client, url: str, part: Path, log: logging.Logger) -> None:
    offset = part.stat().st_size if part.is_file() else 0
    if not _fetch_into(client, url, part, offset, log):
        log.info("%s no longer matches %s; downloading it again from the start", part, url)
        _fetch_into(client, url, part, 0, log)


def _fetch_into(client: httpx.Client, url: str, part: Path, offset: int,
                log: logging.Logger) -> bool:
    """Stream `url` into `part`, continuing at `offset` if the server allows.

    False when the server says `offset` lies beyond its file (HTTP 416).
    """
    with client.stream("GET", url, headers={"Range": f"bytes={offset}-"} if offset else {}) as response:
        if response.status_code == 416 and offset:
            return False
        response.raise_for_status()
        _refuse_web_page(response, url)
        resumed = offset > 0 and response.status_code == 206 and _range_start(response) == offset
        if offset and not resumed:
            log.info("%s does not support resuming; downloading it again from the start", url)
        start = offset if resumed else 0
        total = _expected_size(response, start)
        log.info("Downloading %s%s", url, f" from byte {start}" if resumed else "")
        with open(part, "ab" if resumed else "wb") as stream:
            _copy_body(response, stream, start, total, url, log)
            stream.flush()
            os.fsync(stream.fileno())
    size = part.stat().st_size
    if total is not None and size != total:
        raise NetworkError(
            f"Downloading {url} stopped at {size} of {total} bytes. Run again to resume from "
            f"{part}.")
    return True


def _copy_body(response: httpx.Response, stream, done: int, total: int | None, url: str,
               log: logging.Logger) -> None:
    last_report = time.monotonic()
    # [ui] on a terminal
    bar = progress_bar(total, f"download {url_filename(url)}", initial=done, unit="B")
    for chunk in response.iter_bytes():  # no chunk size: keep every byte that arrived if cut off
        stream.write(chunk)
        done += len(chunk)
        bar.update(len(chunk))
        if time.monotonic() - last_report > _PROGRESS_EVERY_S:
            last_report = time.monotonic()
            of_total = f" of {total / 1e6:.0f}" if total else ""
            log.info("Downloading %s: %.0f%s MB", url, done / 1e6, of_total)
    bar.close()


def _refuse_web_page(response: httpx.Response, url: str) -> None:
    """Sites answer a download link with a login or error page as HTML; that is never a checkpoint."""
    if response.headers.get("Content-Type", "").lower().startswith("text/html"):
        raise ModelError(
            f"{url} answered with a web page, not a model file: the site may need you to log in, or the "
            "link points to the model's page rather than to the file. Use the file's direct download "
            "link, or download it in a browser and pass its local path.")


def _range_start(response: httpx.Response) -> int | None:
    """The first byte of a 206 answer, from 'Content-Range: bytes START-END/SIZE'."""
    value = response.headers.get("Content-Range", "")
    unit, _, span = value.partition(" ")
    start = span.split("-", 1)[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def _expected_size(response: httpx.Response, start: int) -> int | None:
    length = response.headers.get("Content-Length", "")
    return start + int(length) if length.isdigit() else None


def _auth_header(url: str, token: str | None) -> dict[str, str]:
    """A Hugging Face token goes only to Hugging Face, never to other hosts."""
    host = (urlsplit(url).hostname or "").lower()
    on_hub = any(host == name or host.endswith("." + name) for name in _HUB_HOSTS)
    return {"Authorization": f"Bearer {token}"} if token and on_hub else {}
