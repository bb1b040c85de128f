"""Base models from the Hugging Face hub, downloaded once into the model cache.

Only the files a diffusers pipeline loads are fetched: configs, tokenizer and
scheduler files and the main `.safetensors` weights. Weight variants (fp16,
non-EMA), legacy `.bin`/`.ckpt` copies and the safety checker are skipped,
which saves gigabytes on the usual Stable Diffusion repos.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from dreambooth_core.errors import ModelError, NetworkError
from dreambooth_core.model.download import is_connection_failure

HUB_FILES = ["model_index.json", "*/*.json", "*/*.safetensors", "*/*.txt", "*/*.model"]
SKIPPED_HUB_FILES = ["*.fp16.*", "*non_ema*", "*.ema.*", "safety_checker/*"]
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def looks_like_hub_id(spec: str) -> bool:
    """True for 'owner/name', the shape of a Hugging Face repo id."""
    return bool(_HUB_ID.fullmatch(spec)) and ".." not in spec


def download_hub_model(repo_id: str, hub_cache: Path, revision: str | None = None,
                       token: str | None = None,
                       log: logging.Logger = logging.getLogger("dreambooth")) -> Path:
    """The local snapshot folder of diffusers model `repo_id`, downloading it only if it is not cached."""
    folder = download_hub_snapshot(repo_id, hub_cache, HUB_FILES, SKIPPED_HUB_FILES, revision,
                                   token, log)
    _check_diffusers_snapshot(folder, repo_id)
    return folder


def download_hub_snapshot(repo_id: str, hub_cache: Path, allow: list[str],
                          ignore: list[str] | None = None,
                          revision: str | None = None, token: str | None = None,
                          log: logging.Logger = logging.getLogger("dreambooth")) -> Path:
    """The files of `repo_id` matching `allow`, downloaded only if they are not cached.

    The cache is asked first with no network call at all, so a model fetched
    once keeps working offline. Its folder name is the resolved commit sha.
    """
    from huggingface_hub import snapshot_download

    options = dict(revision=revision, cache_dir=str(hub_cache), token=token, allow_patterns=allow,
                   ignore_patterns=ignore)
    try:
        folder = _cached_snapshot(repo_id, options)
        if folder is None:
            log.info("Downloading %s%s from the Hugging Face hub", repo_id,
                     f" at {revision}" if revision else "")
            folder = Path(snapshot_download(repo_id, **options))
        else:
            log.info("Using %s from the cache %s", repo_id, folder)
    except Exception as exc:
        error = hub_error(exc, repo_id, revision, hub_cache)
        if error is None:
            raise
        raise error from exc
    return folder


def _cached_snapshot(repo_id: str, options: dict) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True, **options))
    except LocalEntryNotFoundError:
        return None


def hub_error(exc: BaseException, repo_id: str, revision: str | None,
              hub_cache: Path) -> Exception | None:
    """A ModelError or NetworkError telling the user what went wrong, or None if `exc` is unexpected."""
    from huggingface_hub.errors import (
        DisabledRepoError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    page = f"https://huggingface.co/{repo_id}"
    if isinstance(exc, GatedRepoError):
        return ModelError(
            f"{repo_id} is a gated model: accept its terms on {page} while logged in, "
            "then pass a token with access (hf_token or the HF_TOKEN environment variable).")
    if isinstance(exc, RepositoryNotFoundError):
        return ModelError(
            f"No model {repo_id!r} on the Hugging Face hub, or it is private. Check the id "
            "(owner/name, as in the model page's address), or pass a token if it is private. If "
            f"you meant a local folder, there is no folder {repo_id!r}.")
    if isinstance(exc, RevisionNotFoundError):
        return ModelError(
            f"{repo_id} has no revision {revision!r}. Pass a branch, tag or commit that exists "
            f"(see {page}/commits/main) with --revision, or leave it out for the main branch.")
    if isinstance(exc, DisabledRepoError):
        return ModelError(f"{repo_id} has been disabled on the Hugging Face hub. Choose another "
                          "base model.")
    if isinstance(exc, HFValidationError):
        return ModelError(f"{repo_id!r} is not a valid Hugging Face repo id: {exc}. Use the form "
                          "owner/name.")
    if caused_by(exc, OfflineModeIsEnabled):
        return ModelError(
            f"{repo_id} is not in the model cache ({hub_cache}) and HF_HUB_OFFLINE is set, "
            "so it cannot be downloaded. Unset HF_HUB_OFFLINE for one run to download it, "
            "or pass a local diffusers folder instead.")
    status = _http_status(exc)
    if status in (401, 403):
        return ModelError(
            f"The Hugging Face hub refused access to {repo_id} (HTTP {status}). "
            f"Pass a token that can read {page} (hf_token or HF_TOKEN).")
    if status is not None and status < 500 and status not in (408, 429):
        return ModelError(f"The Hugging Face hub answered HTTP {status} for {repo_id} "
                          f"({root_cause(exc)}). Check the repo id and revision.")
    if status is not None or isinstance(exc, LocalEntryNotFoundError) or is_connection_failure(exc):
        return NetworkError(
            f"Could not download {repo_id} from the Hugging Face hub ({root_cause(exc)}). "
            f"Check the network and try again; once downloaded, the model is used from {hub_cache} "
            "without the network.")
    return None


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status behind a hub error, looking through the errors that caused it."""
    from huggingface_hub.errors import HfHubHTTPError

    for cause in _chain(exc):
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            return cause.response.status_code
    return None


def caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """True if `exc` or an error that led to it is a `kind`."""
    return any(isinstance(cause, kind) for cause in _chain(exc))


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def network_failure_in(exc: BaseException) -> bool:
    """True if `exc` or an error that led to it is a connection failure or timeout."""
    return any(is_connection_failure(cause) for cause in _chain(exc))


def root_cause(exc: BaseException) -> str:
    """'Type: first line of message' for the error at the bottom of `exc`'s chain, for quoting."""
    *_, root = _chain(exc)
    line = (str(root).strip().splitlines() or [""])[0].rstrip(".")
    return f"{type(root).__name__}: {line}" if line else type(root).__name__


def _check_diffusers_snapshot(folder: Path, repo_id: str) -> None:
    if not (folder / "model_index.json").is_file():
        raise ModelError(
            f"{repo_id} is not a diffusers model (it has no model_index.json). If it offers a "
            "single .safetensors or .ckpt file, pass that file's download URL (or a local copy) "
            "instead.")
    if not any(folder.glob("*/*.safetensors")):
        raise ModelError(
            f"{repo_id} has no .safetensors weights outside the skipped variants {SKIPPED_HUB_FILES}. "
            "Choose a repo that ships diffusers .safetensors weights, or pass a single-file checkpoint.")
