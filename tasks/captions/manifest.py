"""Writing each prepared photo's token and caption into the dataset manifest."""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

from pydantic import BaseModel, ConfigDict

from tasks.captions.tokens import caption, token_from_filename
from tasks.config import digest
from tasks.dataset.prepare import MANIFEST
from tasks.session import Session


class Captions(BaseModel):
    model_config = ConfigDict(frozen=True)
    tokens: list[str]
    digest: str


def caption_dataset(session: Session, token: str | None, template: str,
                    log: logging.Logger | None = None) -> Captions:
    log = log or logging.getLogger("dreambooth")
    manifest = session.read_json(MANIFEST)
    for item in manifest["items"]:
        item["token"] = token or token_from_filename(PurePosixPath(item["source"]).name)
        item["caption"] = caption(template, item["token"])
    session.write_json(MANIFEST, manifest)
    tokens = sorted({item["token"] for item in manifest["items"]})
    log.info("Tokens: %s; e.g. caption %r", ", ".join(tokens), manifest["items"][0]["caption"])
    captions = [(item["source"], item["caption"]) for item in manifest["items"]]
    return Captions(tokens=tokens, digest=digest([manifest["digest"], captions]))
