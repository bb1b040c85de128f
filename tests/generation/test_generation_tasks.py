"""The class-image and sample tasks in a flow: results, files and artifacts in the Prefect UI."""

import io
from pathlib import Path

import safetensors.torch
from PIL import Image

from tasks.model.fetch import LocalModel
from tasks.model.tiny import TINY_VERSION
from tasks.session_state import SessionRef
from tasks.training.checkpoint import CheckpointStore
from tasks.training.trainer import UNET_FILE

from test_samples import load_unet


def markdown_artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return artifacts[0].data


def commit_unet(session, step: int, model_path: str) -> None:
    """A committed checkpoint holding the tiny UNet with one changed weight, as training leaves it."""
    state = {k: v.contiguous() for k, v in load_unet(model_path).state_dict().items()}
    state["conv_out.bias"] = state["conv_out.bias"] + 0.25
    CheckpointStore(session).save(step, {UNET_FILE: lambda f: f.write(safetensors.torch.save(state))}, {})


def test_class_images_and_samples_tasks(prefect_api_url, session, tmp_path, tiny_model_path):
    from prefect import flow

    from tasks.generate_class_images import generate_class_images
    from tasks.render_samples import render_samples

    ref = SessionRef(storage=str(tmp_path / "sessions"), name="demo", uid="u1")
    model = LocalModel(path=tiny_model_path, digest=TINY_VERSION, kind="tiny", source="tiny")
    commit_unet(session, 10, tiny_model_path)

    @flow
    def generate():
        classes = generate_class_images(ref, model, 64, count=2, device="cpu")
        samples = render_samples(ref, model, 10, 64, ["a red car"], device="cpu", steps=2)
        return classes, samples

    classes, samples = generate()
    grid_file = Path(session.path("samples/step-000010.png"))
    assert classes.generated >= 2 and [len(s.files) for s in classes.sets] == [2]
    table = markdown_artifact("class-images-demo")
    assert "| shrk | photo of man | generated | 2 |" in table
    assert samples.prompts == ["photo of shrk man", "a red car"]
    grid = session.read_bytes("samples/step-000010.png")
    assert Image.open(io.BytesIO(grid)).size == (2 * 64, 2 * 64)
    listing = markdown_artifact("samples-demo")
    assert "samples/step-000010.png" in listing and "a red car" in listing

    written = grid_file.stat().st_mtime_ns
    again, same = generate()
    assert again.generated == 0 and same == samples
    assert grid_file.stat().st_mtime_ns == written  # the saved samples are reused, not rendered again
