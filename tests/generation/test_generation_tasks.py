"""The class-image task in a flow: results, files and the artifact in the Prefect UI."""

import pytest

from dreambooth_core.config import DreamBoothConfig
from dreambooth_core.families.base_model import LocalModel
from dreambooth_core.families.sd_tiny import TINY_VERSION
from dreambooth_core.session.storage import SessionRef


def markdown_artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return artifacts[0].data


@pytest.mark.slow  # renders class images through Prefect
def test_class_image_task_generates_once_and_skips_without_a_class_word(prefect_api_url, session, tmp_path,
                                                                          tiny_model_path):
    from prefect import flow

    from tasks.generate_class_images import generate_class_images

    ref = SessionRef(storage=str(tmp_path / "sessions"), name="demo", uid="u1")
    model = LocalModel.at(tiny_model_path, TINY_VERSION, "tiny", "tiny")

    @flow
    def generate(**settings):
        config = DreamBoothConfig(session="demo", class_images=2, device="cpu", **settings)
        return generate_class_images(ref, model, 64, config.training, config.captions.class_prompt,
                                     config.runtime.device)

    classes = generate()
    assert classes.generated >= 2 and [len(s.files) for s in classes.sets] == [2]
    assert "| shrk | photo of man | generated | 2 |" in markdown_artifact("class-images-demo")
    assert generate().generated == 0
    assert generate(prior_loss_weight=0) is None
    assert generate(method="textual-inversion") is None
