"""reports/captions.md: each prepared photo as a thumbnail beside the caption it trains with,
and where the caption came from, to read the captions through before training (and edit them)."""

from __future__ import annotations

from pathlib import PurePosixPath

from dreambooth_core.reports.images import embedded_jpeg
from dreambooth_core.session.dataset_manifest import DatasetManifest
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import CAPTIONS_REPORT

THUMBNAIL = 96  # pixels; embedded, so the report shows in the Prefect UI wherever the session lives
ORIGINS = {"rule": "the instance prompt (--captions token)",
           "hand-written": "your .txt beside the photo",
           "captioner": "the captioner (edit the .txt to change it)"}


def caption_report_markdown(session: Session, manifest: DatasetManifest, mode: str,
                            captioner: str | None) -> str:
    by = f" by {captioner}" if mode == "auto" and captioner else ""
    lines = [f"# Captions of session {session.name}", "",
             f"--captions {mode}{by}. A caption written beside a photo (`photos/<name>.txt`) always wins"
             + ("; each described caption is in `dataset/<image>.txt`: edit it and rerun to train with your "
                "words (a rerun keeps it)." if mode == "auto" else "."), "",
             "| photo | caption | from |", "|---|---|---|"]
    for item in manifest.items:
        thumbnail = embedded_jpeg(session.read_bytes(item.file), THUMBNAIL)
        name = PurePosixPath(item.source).name
        where = ORIGINS.get(item.caption_origin or "rule", "")
        if item.caption_file:
            where += f": `{item.caption_file}`"
        photo = f"![{_cell(name)}]({thumbnail}) {_cell(name)}"
        lines.append(f"| {photo} | {_cell(item.caption or '')} | {where} |")
    return "\n".join(lines) + "\n"


def write_caption_report(session: Session, manifest: DatasetManifest, mode: str,
                         captioner: str | None) -> str:
    markdown = caption_report_markdown(session, manifest, mode, captioner)
    session.write_bytes(CAPTIONS_REPORT, markdown.encode())
    return markdown


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
