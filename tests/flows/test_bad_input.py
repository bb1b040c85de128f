"""A user's mistake gets one clear paragraph and exit code 2: no traceback, nothing lost."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import EXIT_USER_ERROR, main

pytestmark = pytest.mark.slow  # a CLI or Prefect run each: the full suite only

REPO = Path(__file__).resolve().parents[2]


def dreambooth(api_url: str, cwd: Path, *args: str, preexec_fn=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, preexec_fn=preexec_fn)


def assert_user_error(result: subprocess.CompletedProcess, *phrases: str) -> None:
    assert result.returncode == EXIT_USER_ERROR, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    error = result.stderr[result.stderr.index("error: "):]
    for phrase in phrases:
        assert phrase in error, error


def tiny_args(tmp_path: Path, photos: Path, session: str = "s") -> list[str]:
    return ["train", "--session", session, "--storage", str(tmp_path / "sessions"), "--model", "tiny",
            "--photos", str(photos), "--steps", "2"]


def test_missing_photos_folder(prefect_api_url, tmp_path):
    result = dreambooth(prefect_api_url, tmp_path, *tiny_args(tmp_path, tmp_path / "nope"))
    assert_user_error(result, "nope", "does not exist", "--photos")


def test_folder_without_usable_images(prefect_api_url, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a photo")
    result = dreambooth(prefect_api_url, tmp_path, *tiny_args(tmp_path, folder))
    assert_user_error(result, "no photos in", "shrk (1).jpg")


def test_undecodable_photo_is_named_and_the_originals_stay(prefect_api_url, tmp_path, photos):
    (photos / "shrk (9).jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    result = dreambooth(prefect_api_url, tmp_path, *tiny_args(tmp_path, photos))
    assert_user_error(result, "shrk (9).jpg", "cannot be read as an image")
    # The photo check runs before the import: the originals stay as they were and nothing
    # is recorded, so the same command works once the folder is fixed.
    assert (photos / "shrk (9).jpg").read_bytes() == b"\xff\xd8\xff\xe0 truncated jpeg"
    assert not (tmp_path / "sessions" / "s" / "photos").exists()


def test_unknown_model(prefect_api_url, tmp_path, photos):
    # --resolution: the example photos are too small for the 512 px an unknown model is checked at.
    result = dreambooth(prefect_api_url, tmp_path, *tiny_args(tmp_path, photos), "--model", "./no-such-model",
                        "--resolution", "64")
    assert_user_error(result, "no-such-model", "no such file or folder")


def test_new_session_without_photos_stops_before_fetching_the_model(prefect_api_url, tmp_path):
    # The default model is a hub download; it must not be attempted.
    assert main(["train", "--session", "s", "--storage", str(tmp_path)]) == EXIT_USER_ERROR
    assert not (tmp_path / "s" / "photos").exists()


@pytest.mark.parametrize("name", ["../x", "/etc", "a/b", "x" * 65])
def test_session_names_that_leave_the_storage_root(tmp_path, photos, name, capsys):
    assert main(["train", "--session", name, "--storage", str(tmp_path), "--photos", str(photos)]) == 2
    assert "session" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [photos.parent / "photos"]


@pytest.mark.parametrize("storage", ["{file}/sessions", "nosuchprotocol://bucket"])
def test_unreachable_storage(tmp_path, photos, storage, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    url = storage.format(file=blocker)
    assert main(["train", "--session", "s", "--storage", url, "--photos", str(photos)]) == 2
    error = capsys.readouterr().err
    assert "cannot use session storage" in error and url in error


def test_invalid_flag_value_names_the_flag(tmp_path, capsys):
    assert main(["train", "--session", "s", "--storage", str(tmp_path), "--chunk-steps", "0"]) == 2
    assert "--chunk-steps" in capsys.readouterr().err


@pytest.mark.parametrize("processes", [[], ["--gpus", "2", "--device", "cpu"]], ids=["one process", "two processes"])
def test_a_diverging_run_stops_before_committing_and_exports_nothing(processes, prefect_api_url, tmp_path, photos):
    # 1e30 is finite, so it passes the up-front check, and training goes NaN for real.
    result = dreambooth(prefect_api_url, tmp_path, *tiny_args(tmp_path, photos), "--steps", "4",
                        "--chunk-steps", "2", "--learning-rate", "1e30", *processes)
    assert_user_error(result, "training stopped: the loss became", "at step 2",
                      "Steps 1-2 were not saved (nothing was committed)", "--learning-rate (this run: 1e+30)")
    assert "train steps 2-4" not in result.stderr  # the failed chunk ended the run
    session = tmp_path / "sessions" / "s"
    assert not list(session.glob("checkpoints/step-*")) and not list(session.glob("s.*"))


def _tiny_copy(tiny_model_path: str, target: Path) -> Path:
    import shutil

    return Path(shutil.copytree(tiny_model_path, target))


def _inpainting(folder: Path) -> None:
    config = folder / "unet" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "in_channels": 9}))


def _pickled_unet(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file

    [weights] = (folder / "unet").glob("*.safetensors")
    torch.save(load_file(weights), folder / "unet" / "diffusion_pytorch_model.bin")  # plain tensors
    weights.unlink()


@pytest.mark.parametrize("edit, phrases", [
    (_inpainting, ["in_channels=9", "not one this tool can train"]),
    (_pickled_unet, ["only unet/diffusion_pytorch_model.bin, a pickle", "safetensors"]),
])
def test_a_model_it_cannot_use_is_refused_once_right_after_the_fetch(prefect_api_url, tmp_path, photos,
                                                                     tiny_model_path, edit, phrases):
    model = _tiny_copy(tiny_model_path, tmp_path / "model")
    edit(model)
    result = dreambooth(prefect_api_url, tmp_path, *tiny_args(tmp_path, photos), "--model", str(model))
    assert_user_error(result, *phrases)
    assert "train steps" not in result.stderr and "prepare photos" not in result.stderr
    assert not (tmp_path / "sessions" / "s" / "dataset").exists()  # photos were not prepared


def test_an_unreachable_model_url_ends_in_one_paragraph_after_the_retries(prefect_api_url, tmp_path, photos):
    from web_server import closed_port_url

    url = closed_port_url("/model.safetensors")
    # The retries as they are, without their waits (75 s of back-off).
    run = ("import sys\nimport flows.dreambooth as flow\n"
           "flow.fetch_base_model = flow.fetch_base_model.with_options(retry_delay_seconds=0)\n"
           "from flows.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", run, *tiny_args(tmp_path, photos), "--model", url,
                             "--resolution", "64"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert_user_error(result, f"Downloading {url} failed", "Check the network and run again.")
    assert not (tmp_path / "sessions" / "s" / "dataset").exists()


def test_an_unreadable_photo_is_named_by_the_photo_check(prefect_api_url, tmp_path, photos):
    from permissions import bound_by_permissions, deny_reading

    photo = photos / "shrk (3).jpg"
    deny_reading(photo)
    try:
        result = dreambooth(prefect_api_url, tmp_path, *tiny_args(tmp_path, photos),
                            preexec_fn=bound_by_permissions())
    finally:
        photo.chmod(0o644)
    assert_user_error(result, "shrk (3).jpg: the file cannot be read (Permission denied)", "chmod a+r")
    assert not (tmp_path / "sessions" / "s" / "photos").exists()  # nothing imported
