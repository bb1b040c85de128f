"""Uploading a session's files and card to a Hugging Face model repo with huggingface_hub.

Idempotent and resumable: each file's sha256 (git's blob id for small text files) is compared
with what the repo holds (paths-info), and only the files that differ go into the commit; a
rerun after everything arrived commits nothing. A kill mid-upload loses nothing either: the LFS
objects that arrived are skipped by the hub on the next try (its batch API answers that it has
them), and the commit is made only once all have. Files a previous publish to the repo put there
and this one no longer has (another --step's names) are deleted in the same commit.

The token is passed to huggingface_hub only; no message, log line or file holds it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dreambooth_core.errors import NetworkError, PublishError
from dreambooth_core.publish.card import CardFacts, hub_base_model, model_card
from dreambooth_core.publish.contents import CARD, PublishedFiles, published_files
from dreambooth_core.publish.token import require_token
from dreambooth_core.session.folder import Session
from dreambooth_core.session.publications import Publication, load_publications, record_publication
from dreambooth_core.session.scratch import scratch_folder
from dreambooth_core.session.state import stored_config

# The hub stores files of this size and larger in LFS whatever their type.
_LFS_SIZE = 10 * 1024 * 1024


class PublishResult(Publication):
    uploaded: list[str]  # paths in the repo whose content changed in this publish
    deleted: list[str]


def publish_session(session: Session, repo: str, token: str | None, private: bool = False,
                    step: int | None = None, endpoint: str | None = None,
                    log: logging.Logger | None = None) -> PublishResult:
    """Upload the final outputs (or exports/step-`step`/) and the card to `repo`."""
    from huggingface_hub import HfApi

    log = log or logging.getLogger("dreambooth")
    check_repo_name(repo)
    require_token(token)
    files = published_files(session, step)
    api = HfApi(endpoint=endpoint, token=token)
    with _hub_errors(repo, api.endpoint):
        url = str(api.create_repo(repo, private=private, exist_ok=True, repo_type="model"))
        card = model_card(session, files,
                          CardFacts(repo=repo, base_license=_base_license(api, session),
                                                    header=_main_header(session, files)))
        with _local_files(session, files) as local:
            local[CARD] = card.encode()
            digests = {path: _sha256(content) for path, content in local.items()}
            changed = _changed(api, repo, local, digests)
            stale = sorted(set(_previous(session, repo)) - set(local))
            commit = _commit(api, repo, local, changed, stale, session.name, files.step, log)
    publication = PublishResult(repo=repo, url=url, private=private, step=files.step, commit=commit,
                                files=digests, published_at=time.time(), uploaded=changed,
                                deleted=stale)
    record_publication(session,
                       Publication(**publication.model_dump(exclude={"uploaded", "deleted"})))
    return publication


def check_repo_name(repo: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if repo.count("/") != 1:
            raise HFValidationError("it needs one '/'")
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise PublishError(f"--repo {repo!r} is not a Hugging Face repo id ({str(exc).splitlines()[0]}): "
                           "give USER/NAME or ORGANISATION/NAME, e.g. --repo alice/shrk-lora.") from None


def _commit(api, repo: str, local: dict[str, Path | bytes], changed: list[str], stale: list[str],
            name: str, step: int, log: logging.Logger) -> str | None:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    if not changed and not stale:
        log.info("%s already holds step %d of session %s: nothing to upload", repo, step, name)
        return api.repo_info(repo).sha
    for path in changed:
        log.info("Uploading %s", path)
    def content(path: str) -> bytes | str:
        return local[path] if isinstance(local[path], bytes) else str(local[path])

    operations = ([CommitOperationAdd(path, content(path)) for path in changed]
                  + [CommitOperationDelete(path) for path in stale])
    info = api.create_commit(repo, operations, commit_message=f"Session {name} at step {step}",
                             commit_description="Published with dreambooth-pipeline.")
    return info.oid


def _changed(api, repo: str, local: dict[str, Path | bytes], digests: dict[str, str]) -> list[str]:
    """The paths whose content the repo does not hold yet."""
    from huggingface_hub.utils import sha as hub_sha

    remote = {}
    paths = sorted(local)
    # the hub answers paths-info for at most ~100 paths a call
    for start in range(0, len(paths), 100):
        remote |= {f.path: f for f in api.get_paths_info(repo, paths[start:start + 100])
                   if hasattr(f, "blob_id")}
    changed = []
    for path in paths:
        known = remote.get(path)
        if known is None:
            changed.append(path)
        elif known.lfs is not None:
            if known.lfs.sha256 != digests[path]:
                changed.append(path)
        elif _size(local[path]) >= _LFS_SIZE or known.blob_id != hub_sha.git_hash(_read(local[path])):
            changed.append(path)
    return changed


def _previous(session: Session, repo: str) -> list[str]:
    known = load_publications(session).repos.get(repo)
    return list(known.files) if known else []


@contextmanager
def _local_files(session: Session, files: PublishedFiles) -> Iterator[dict[str, Path | bytes]]:
    """Each file as a local path: the session's own on local storage, else a downloaded copy."""
    if session.is_local:
        yield {remote: Path(session.path(relative)) for remote, relative in files.files.items()}
        return
    with scratch_folder(session, "publish") as folder:
        local = {}
        for remote, relative in files.files.items():
            target = folder / remote
            target.parent.mkdir(parents=True, exist_ok=True)
            session.get_file(relative, target)
            local[remote] = target
        yield local


def _main_header(session: Session, files: PublishedFiles) -> dict[str, str]:
    """The safetensors metadata of the first top-level .safetensors file (what it was trained on)."""
    import json

    for remote, relative in sorted(files.files.items()):
        if "/" not in remote and remote.endswith(".safetensors"):
            with session.fs.open(session.path(relative), "rb") as file:
                size = int.from_bytes(file.read(8), "little")
                return json.loads(file.read(size)).get("__metadata__", {})
    return {}


def _base_license(api, session: Session) -> str | None:
    """The base model's license from its hub card; None for a local model or when the hub has none."""
    from huggingface_hub.errors import HfHubHTTPError

    base = hub_base_model(stored_config(session).base_model.model)
    if base is None:
        return None
    try:
        card = api.model_info(base, expand=["cardData"]).card_data
    except (HfHubHTTPError, OSError):
        # gated, gone or unreachable: the card then says the base model's license applies
        return None
    return getattr(card, "license", None) if card else None


@contextmanager
def _hub_errors(repo: str, endpoint: str) -> Iterator[None]:
    """The hub's refusals as one message that says what to do (never with the token)."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        yield
    except OfflineModeIsEnabled:
        raise PublishError("huggingface_hub is in offline mode (HF_HUB_OFFLINE is set), so nothing can be "
                           "published: unset HF_HUB_OFFLINE and run the same command again.") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        server = (exc.server_message or str(exc).splitlines()[0]).strip()
        if status == 401:
            raise PublishError(f"the Hugging Face hub refused the token (401: {server}). Make a token with "
                               "write access at https://huggingface.co/settings/tokens and set HF_TOKEN "
                               "to it.") from None
        if status in (403, 404):
            raise PublishError(f"the Hugging Face hub refused to let this token write to {repo!r} ({status}: "
                               f"{server}). Use a repo in your own namespace or an organisation you may "
                               "write to, with a token that has write access.") from None
        raise NetworkError(f"the Hugging Face hub ({endpoint}) answered {status}: {server}. Run the same "
                           "command again: files that arrived are not uploaded twice.") from None
    except (httpx.TransportError, ConnectionError) as exc:
        raise NetworkError(f"cannot reach the Hugging Face hub at {endpoint} ({type(exc).__name__}). Check "
                           "the connection and run the same command again: files that arrived are not "
                           "uploaded twice.") from None


def _sha256(content: Path | bytes) -> str:
    if isinstance(content, bytes):
        return hashlib.sha256(content).hexdigest()
    digest = hashlib.sha256()
    with open(content, "rb") as file:
        for block in iter(lambda: file.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _size(content: Path | bytes) -> int:
    return len(content) if isinstance(content, bytes) else content.stat().st_size


def _read(content: Path | bytes) -> bytes:
    return content if isinstance(content, bytes) else content.read_bytes()
