"""`dreambooth upload`: photos into the session, then the event a deployment trigger runs on."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dreambooth_core.config import DreamBoothConfig
from flows.upload import UPLOADED

pytestmark = pytest.mark.slow  # a CLI or Prefect run each: the full suite only

REPO = Path(__file__).resolve().parents[2]


def upload(api_url: str | None, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update({"PYTHONPATH": str(REPO), **({"PREFECT_API_URL": api_url} if api_url else {})})
    return subprocess.run([sys.executable, "-m", "flows.cli", "upload", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def uploaded_events(session: str, seconds: float = 20) -> list:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    wanted = EventFilter(event=EventNameFilter(name=[UPLOADED]),
                         resource=EventResourceFilter(id=[f"dreambooth.session.{session}"]))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            response = client.request("POST", "/events/filter",
                                      json={"filter": wanted.model_dump(mode="json"), "limit": 10})
        events = response.json()["events"]
        if events:
            return events
        time.sleep(0.5)
    return []


def test_upload_copies_the_photos_and_emits_the_event_with_the_session_config(
        prefect_api_url, tmp_path, photos):
    result = upload(prefect_api_url, tmp_path, "--session", "up", "--photos", str(photos),
                    "--storage", "sessions", "--model", "tiny", "--steps", "30", "--deployment",
                    "vertex-gpu")
    assert result.returncode == 0, result.stderr
    session = tmp_path / "sessions" / "up"
    assert sorted(p.name for p in (session / "photos").iterdir()) == sorted(p.name for p in photos.iterdir())

    (event,) = uploaded_events("up")
    assert event["resource"]["dreambooth.deployment"] == "vertex-gpu"
    config = DreamBoothConfig(**event["payload"]["config"])
    # the worker runs elsewhere: an absolute storage path, and the session's own photos
    assert config.inputs.storage == str(tmp_path / "sessions") and config.inputs.photos is None
    assert (config.base_model.model, config.training.steps) == ("tiny", 30)


def test_without_a_server_the_photos_are_uploaded_and_it_says_nothing_was_triggered(tmp_path, photos):
    result = upload(None, tmp_path, "--session", "solo", "--photos", str(photos), "--model", "tiny")
    assert result.returncode == 0, result.stderr
    assert "no training run was triggered" in result.stderr
    assert (tmp_path / "sessions" / "solo" / "photos").is_dir()


def test_a_missing_photo_folder_is_named(prefect_api_url, tmp_path):
    result = upload(prefect_api_url, tmp_path, "--session", "bad", "--photos", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "nope" in result.stderr and "Traceback" not in result.stderr


def test_upload_to_a_storage_block_puts_the_photos_where_the_block_says(prefect_api_url, tmp_path, photos):
    from blocks import SessionStorage

    SessionStorage(url=str(tmp_path / "block-store")).save("upload-store", overwrite=True)
    result = upload(prefect_api_url, tmp_path, "--session", "viablock", "--photos", str(photos),
                    "--storage-block", "upload-store", "--model", "tiny")
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "block-store" / "viablock" / "photos").iterdir())) == len(list(photos.iterdir()))
    assert not (tmp_path / "sessions").exists()
    (event,) = uploaded_events("viablock")
    assert DreamBoothConfig(**event["payload"]["config"]).inputs.storage_block == "upload-store"
