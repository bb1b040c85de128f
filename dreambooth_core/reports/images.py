"""How an image in the session is shown in the Prefect UI.

The UI shows images by URL, and its browser cannot read a local folder or a
private bucket. In order of preference:
1. a public base URL under which the storage is served (DREAMBOOTH_PUBLIC_URL,
   e.g. https://storage.googleapis.com/bucket/sessions for gs://bucket/sessions);
2. for object stores, a signed URL (gcsfs `sign`, valid SIGNED_URL_DAYS);
3. otherwise the image itself, downscaled to a JPEG and embedded as a data: URI.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from PIL import Image

from dreambooth_core.session.folder import Session

PUBLIC_URL_ENV = "DREAMBOOTH_PUBLIC_URL"
SIGNED_URL_DAYS = 7  # the longest a GCS v4 signature may live
EMBEDDED_MAX_SIDE = 768
EMBEDDED_QUALITY = 85


@dataclass(frozen=True)
class ImageLink:
    url: str
    how: str  # "public", "signed" or "embedded"
    note: str = ""  # e.g. when a signed link expires


def embedded_jpeg(data: bytes, max_side: int = EMBEDDED_MAX_SIDE) -> str:
    """A data: URI of the image as a JPEG no larger than max_side (aspect kept)."""
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=EMBEDDED_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def signed_url(fs, path: str, days: int = SIGNED_URL_DAYS) -> str | None:
    """A signed https URL for `path`, or None when the storage or credentials cannot sign."""
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    options = {"version": "v4"} if "gs" in protocols else {}  # v4: the current GCS signature
    try:
        url = fs.sign(path, expiration=int(timedelta(days=days).total_seconds()), **options)
    except Exception:  # NotImplementedError, or credentials without a private key
        return None
    return url if isinstance(url, str) and url.startswith("https://") else None


def image_link(session: Session, relative: str, public_base: str | None = None) -> ImageLink:
    public_base = public_base if public_base is not None else os.environ.get(PUBLIC_URL_ENV)
    if public_base:
        return ImageLink(f"{public_base.rstrip('/')}/{session.name}/{relative}", "public")
    if not session.is_local:
        url = signed_url(session.fs, session.path(relative))
        if url:
            until = datetime.now(timezone.utc) + timedelta(days=SIGNED_URL_DAYS)
            return ImageLink(url, "signed", f"link valid until {until:%Y-%m-%d %H:%M} UTC")
    return ImageLink(embedded_jpeg(session.read_bytes(relative)), "embedded")


def image_markdown(text: str, link: ImageLink, alt: str, location: str) -> str:
    """Markdown: `text` (its own heading included), the image, where the full file is."""
    note = f" ({link.note})" if link.note else ""
    return f"{text.rstrip()}\n\n![{alt}]({link.url})\n\nFull-size file: `{location}`{note}\n"
