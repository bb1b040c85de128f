"""The prepare-photos task shows the contact sheet in the Prefect UI as a self-contained artifact."""

import base64
import io

from PIL import Image
from sessions import opened_session

from dreambooth_core.photos.originals import import_photos
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import CONTACT_SHEET
from dreambooth_core.session.storage import SessionRef


def markdown_artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return artifacts[0].data


def test_contact_sheet_artifact(prefect_api_url, tmp_path, photos):
    from prefect import flow

    from tasks.prepare_photos import prepare_photos

    ref = SessionRef(storage=str(tmp_path / "sessions"), name="Sheet_1", uid="u1")
    imported = import_photos(opened_session(ref.storage, ref.name), photos)

    @flow
    def prepare():
        return prepare_photos(ref, imported, 64)

    assert prepare().count == 4
    markdown = markdown_artifact("contact-sheet-sheet-1")
    encoded = markdown.split("data:image/jpeg;base64,")[1].split(")")[0]
    shown = Image.open(io.BytesIO(base64.b64decode(encoded)))
    stored = Image.open(io.BytesIO(Session(ref.storage, ref.name).read_bytes(CONTACT_SHEET)))
    assert shown.size == stored.size == (2 * 132 + 4, 2 * 132 + 4)  # four 128-px thumbnails
