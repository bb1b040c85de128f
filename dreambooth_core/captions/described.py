"""What a captioner says of each prepared photo, cached in the session per image content and
captioner: a rerun, or a session whose captions were edited or removed, asks the model nothing
for an image it has described."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from dreambooth_core.hashing import digest
from dreambooth_core.reports.terminal import progress_bar
from dreambooth_core.session.dataset_manifest import DatasetItem
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import CAPTION_CACHE

Describe = Callable[[list[bytes]], list[str]]
BATCH = 8


@dataclass(frozen=True)
class AutoCaptioner:
    name: str  # what its descriptions are cached under (a repo id, or the tiny one's version)
    load: Callable[[], Describe]  # called only when an image has no cached description


def cache_file(item: DatasetItem, captioner: str) -> str:
    return f"{CAPTION_CACHE}/{digest([item.sha256 or item.file, captioner])[:24]}.txt"


def describe_photos(session: Session, items: list[DatasetItem], captioner: AutoCaptioner,
                    log: logging.Logger | None = None) -> dict[str, str]:
    """{prepared file: its description} for `items`; the model is loaded only for the uncached."""
    log = log or logging.getLogger("dreambooth")
    found = {item.file: session.read_bytes(cache_file(item, captioner.name)).decode("utf-8", errors="replace")
             for item in items if session.exists(cache_file(item, captioner.name))}
    todo = [item for item in items if item.file not in found]
    if todo:
        log.info("Describing %d photos with %s (%d cached)", len(todo), captioner.name, len(found))
        describe, bar = captioner.load(), progress_bar(len(todo), "describe photos", unit="photo")
        for start in range(0, len(todo), BATCH):  # each batch is kept as soon as it is described
            batch = todo[start:start + BATCH]
            for item, text in zip(batch, describe([session.read_bytes(item.file) for item in batch])):
                session.write_bytes(cache_file(item, captioner.name), text.encode())
                found[item.file] = text
            bar.update(len(batch))
        bar.close()
    return found
