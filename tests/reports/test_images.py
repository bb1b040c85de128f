"""How session images reach the Prefect UI: public URL, signed URL, or embedded."""

import base64
import io
import json
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from dreambooth_core.reports.images import PUBLIC_URL_ENV, embedded_jpeg, image_link, image_markdown, signed_url
from dreambooth_core.session.folder import Session


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def decoded(uri: str) -> Image.Image:
    assert uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_a_local_image_is_embedded_as_a_small_jpeg(tmp_path, monkeypatch):
    monkeypatch.delenv(PUBLIC_URL_ENV, raising=False)
    session = Session(str(tmp_path), "s")
    session.write_bytes("samples/step-000010.png", png(2048, 1024))
    link = image_link(session, "samples/step-000010.png")
    assert link.how == "embedded"
    image = decoded(link.url)
    assert image.format == "JPEG" and image.size == (768, 384)
    assert len(link.url) < 100_000


def test_a_memory_session_cannot_sign_and_embeds(monkeypatch):
    monkeypatch.delenv(PUBLIC_URL_ENV, raising=False)
    session = Session("memory://ui-images", "s")
    session.write_bytes("reports/loss.png", png(100, 50))
    assert image_link(session, "reports/loss.png").how == "embedded"
    assert decoded(embedded_jpeg(png(100, 50))).size == (100, 50)  # small images keep their size


def test_a_configured_public_base_url_is_used_as_is(tmp_path, monkeypatch):
    monkeypatch.setenv(PUBLIC_URL_ENV, "https://storage.googleapis.com/bucket/sessions/")
    session = Session(str(tmp_path), "shrk")
    link = image_link(session, "reports/loss.png")
    assert (link.how, link.url) == ("public", "https://storage.googleapis.com/bucket/sessions/shrk/reports/loss.png")


def service_account_info() -> dict:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {"type": "service_account", "project_id": "demo", "private_key_id": "1",
            "private_key": pem, "client_email": "ui@demo.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token"}


def test_gcs_images_get_a_signed_url_valid_for_a_week(tmp_path, monkeypatch):
    import gcsfs

    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)  # real Google URLs, as in production
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(service_account_info()))
    fs = gcsfs.GCSFileSystem(project="demo", token=str(key_file))
    url = signed_url(fs, "bucket/sessions/shrk/reports/loss.png")  # signing is local: no network
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.scheme == "https" and parts.path.endswith("/bucket/sessions/shrk/reports/loss.png")
    assert query["X-Goog-Expires"] == ["604800"] and query["X-Goog-Signature"][0]


def test_credentials_that_cannot_sign_give_no_url():
    import gcsfs

    assert signed_url(gcsfs.GCSFileSystem(project="demo", token="anon"), "bucket/a.png") is None


def test_markdown_shows_the_image_and_where_the_full_file_is():
    from dreambooth_core.reports.images import ImageLink

    text = image_markdown("# Samples at step 500\n\nFour prompts.\n",
                          ImageLink("https://x/step-000500.png?X-Goog-Signature=1", "signed",
                                    "link valid until 2026-12-02 10:00 UTC"),
                          "Samples at step 500", "gs://b/shrk/samples/step-000500.png")
    assert text == ("# Samples at step 500\n\nFour prompts.\n\n"
                    "![Samples at step 500](https://x/step-000500.png?X-Goog-Signature=1)\n\n"
                    "Full-size file: `gs://b/shrk/samples/step-000500.png` "
                    "(link valid until 2026-12-02 10:00 UTC)\n")
