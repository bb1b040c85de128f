"""The photo check is the flow's first task: its report lands in the session and the Prefect UI,
and a set with an error stops before the model is fetched or anything is trained."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from flows.cli import EXIT_USER_ERROR, main
from tasks.artifacts import artifact_key

pytestmark = pytest.mark.slow  # a CLI or Prefect run each: the full suite only


def train(storage: Path, session: str, photos: Path | None = None, *extra: str) -> int:
    args = ["train", "--session", session, "--storage", str(storage), "--model", "tiny", "--steps", "1",
            *extra]
    return main(args + (["--photos", str(photos)] if photos else []))


def artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return found[0] if found else None


def test_report_in_the_session_and_in_prefect(prefect_api_url, tmp_path, photos):
    assert train(tmp_path, "good", photos) == 0
    report = json.loads((tmp_path / "good" / "reports" / "dataset.json").read_text())
    assert report["usable"] and report["resolution"] == 64
    assert report["source"] == str(photos)
    assert [p["verdict"] for p in report["photos"]] == ["ok"] * 4
    assert [x["code"] for x in report["subjects"][0]["problems"]] == ["few-photos"]
    assert "| shrk (1).jpg | **ok** |" in (tmp_path / "good" / "reports" / "dataset.md").read_text()
    shown = artifact(artifact_key("dataset", "good"))
    assert shown is not None and "shrk (4).jpg" in shown.data
    # A rerun checks the session's own copies: the original folder is no longer needed.
    assert train(tmp_path, "good") == 0
    report = json.loads((tmp_path / "good" / "reports" / "dataset.json").read_text())
    assert report["source"] == "session 'good'" and report["usable"]


def test_an_error_stops_before_any_checkpoint(prefect_api_url, tmp_path, photos, capsys):
    astronaut = Image.fromarray(data.astronaut())
    both = Image.new("RGB", (1024, 512))
    both.paste(astronaut, (0, 0))
    both.paste(astronaut, (512, 0))
    both.save(photos / "shrk (5).png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(photos / "shrk (6).png")
    assert train(tmp_path, "bad", photos) == EXIT_USER_ERROR
    error = capsys.readouterr().err
    assert "shrk (5).png: 2 faces" in error and "--allow-several-faces" in error
    assert "shrk (6).png: 16x16" in error
    session = tmp_path / "bad"
    assert not (session / "checkpoints").exists() and not (session / "photos").exists()
    assert not (session / "dataset").exists()
    report = json.loads((session / "reports" / "dataset.json").read_text())
    verdicts = {p["name"]: p["verdict"] for p in report["photos"]}
    assert verdicts["shrk (5).png"] == "error" and verdicts["shrk (6).png"] == "error"
    assert artifact(artifact_key("dataset", "bad")) is not None
    # Allowing several faces and removing the tiny photo makes the same session usable.
    (photos / "shrk (6).png").unlink()
    assert train(tmp_path, "bad", photos, "--allow-several-faces") == 0
    assert (session / "bad.safetensors").is_file()
