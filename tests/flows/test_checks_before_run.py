"""What needs no Prefect server is refused before one starts: one `error:` paragraph, exit 2,
with Prefect not even imported (so at once: no server started, none waited for)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from permissions import bound_by_permissions, deny_reading
from web_server import closed_port_url

from flows.cli import EXIT_USER_ERROR

REPO = Path(__file__).resolve().parents[2]
# Runs the CLI's main() and reports, on the last line of stdout, whether it imported Prefect
# (which a run needs only once the checks have passed).
RUN = ("import json, sys\n"
       "from flows.cli import main\n"
       "code = main(sys.argv[1:])\n"
       "print(json.dumps({'prefect': 'prefect' in sys.modules}))\n"
       "sys.exit(code)\n")


def dreambooth(cwd: Path, *args: str, bound: bool = False) -> tuple[subprocess.CompletedProcess, dict]:
    # An API URL nothing listens on: were a flow started, it would fail loudly, not quietly work.
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    result = subprocess.run([sys.executable, "-c", RUN, *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=120, preexec_fn=bound_by_permissions() if bound else None)
    return result, json.loads(result.stdout.strip().splitlines()[-1])


def assert_refused_at_once(result: subprocess.CompletedProcess, facts: dict, *phrases: str) -> None:
    assert result.returncode == EXIT_USER_ERROR, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout and "Value error" not in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("error: ") == 1, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr
    assert not facts["prefect"], "Prefect was imported before the error"


def train(tmp_path: Path, photos: Path, *extra: str) -> list[str]:
    return ["train", "--session", "s", "--storage", str(tmp_path / "sessions"), "--model", "tiny",
            "--photos", str(photos), "--steps", "2", *extra]


@pytest.mark.parametrize("flags, phrases", [
    (["--resolution", "63"], ["--resolution"]),
    (["--learning-rate", "inf"], ["--learning-rate", "finite"]),
    (["--learning-rate", "nan"], ["--learning-rate", "finite"]),
    (["--text-encoder-learning-rate", "inf"], ["--text-encoder-learning-rate", "finite"]),
    (["--prior-loss-weight", "nan"], ["--prior-loss-weight", "finite"]),
    (["--chunk-steps", "0"], ["--chunk-steps"]),
    (["--step-in-backward", "--gradient-accumulation", "2"], ["--step-in-backward needs --gradient-accumulation 1"]),
    (["--step-in-backward", "--gpus", "2"], ["--step-in-backward needs --gpus 1"]),
    (["--gpus", "2", "--nnodes", "2"], ["--nnodes 2 needs --rdzv-endpoint HOST:PORT"]),
    (["--gpus", "3", "--nnodes", "2", "--rdzv-endpoint", "h:1"], ["--gpus 3 is the total", "multiple of 2"]),
    (["--gpus", "2", "--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "h:1"],
     ["--node-rank 2 is not one of the 2 machines"]),
    (["--step-in-backward", "--mixed-precision", "fp16"], ["--step-in-backward needs --mixed-precision bf16 or no"]),
    (["--method", "textual-inversion", "--ema-decay", "0.99"], ["--ema-decay averages UNet weights",
                                                              "--method dreambooth or lora"]),
    (["--base-precision", "int8", "--device", "cpu"], ["--base-precision int8 quantises the frozen base",
                                                       "--method dreambooth trains", "--method lora"]),
    (["--base-precision", "nf4", "--method", "lora", "--device", "cpu"], ["--base-precision nf4 needs a CUDA GPU",
                                                                         "--base-precision int8"]),
    (["--base-precision", "bf16", "--device", "cpu"], ["--base-precision bf16 holds the frozen weights in bf16",
                                                       "--mixed-precision bf16"]),
    (["--offload", "--method", "lora"], ["--offload needs --method dreambooth", "--step-in-backward"]),
    (["--offload", "--step-in-backward", "--device", "cpu"], ["--offload", "nothing to offload to"]),
    (["--optimizer", "adamw-8bit", "--device", "cpu"], ["--optimizer adamw-8bit needs a CUDA GPU",
                                                        "Use --optimizer adamw"]),
    (["--publish-to", "alice"], ["--publish-to", "is not a Hugging Face repo id"]),
    (["--publish-to", "alice/shrk"], ["publishing needs a Hugging Face token with write access"]),
])
def test_invalid_values(tmp_path, photos, flags, phrases):
    result, facts = dreambooth(tmp_path, *train(tmp_path, photos, *flags))
    assert_refused_at_once(result, facts, *phrases)
    assert not (tmp_path / "sessions" / "s").exists()


@pytest.mark.parametrize("name", ["class-images", ".prefect-results", ".hidden"])
def test_names_the_storage_uses_itself(tmp_path, photos, name):
    shared = tmp_path / "sessions" / "class-images"
    shared.mkdir(parents=True)
    (shared / "kept.png").write_bytes(b"class image of every session")
    result, facts = dreambooth(tmp_path, *train(tmp_path, photos, "--session", name))
    assert_refused_at_once(result, facts, repr(name), "reserved", "another --session")
    assert sorted(p.name for p in shared.iterdir()) == ["kept.png"]
    assert sorted(p.name for p in (tmp_path / "sessions").iterdir()) == ["class-images"]


def test_a_session_of_an_unreleased_format_is_refused_naming_its_file(tmp_path, photos):
    """A session.json of format 1, which only unreleased versions wrote, as one of them wrote it."""
    shutil.copytree(REPO / "tests" / "data" / "version1-session", tmp_path / "sessions" / "s")
    before = (tmp_path / "sessions" / "s" / "session.json").read_bytes()
    result, facts = dreambooth(tmp_path, *train(tmp_path, photos))
    assert_refused_at_once(result, facts, f"{tmp_path}/sessions/s/session.json is in session format 1",
                           "Start a new session: pass another --session name")
    assert (tmp_path / "sessions" / "s" / "session.json").read_bytes() == before


def test_storage_that_takes_no_files(tmp_path, photos):
    if not Path("/proc/1").is_dir():
        pytest.skip("no /proc on this system")
    result, facts = dreambooth(tmp_path, *train(tmp_path, photos, "--storage", "/proc/1"))
    assert_refused_at_once(result, facts, "cannot write to session storage '/proc/1'", "--storage")


def test_missing_photos_folder(tmp_path):
    result, facts = dreambooth(tmp_path, *train(tmp_path, tmp_path / "nope"))
    assert_refused_at_once(result, facts, "nope", "does not exist", "--photos")


def test_folder_without_photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a photo")
    result, facts = dreambooth(tmp_path, *train(tmp_path, folder))
    assert_refused_at_once(result, facts, "no photos in", "shrk (1).jpg")


@pytest.mark.parametrize("command", ["train", "validate"])
def test_unreadable_photos_folder(tmp_path, photos, command):
    deny_reading(photos)
    try:
        args = train(tmp_path, photos) if command == "train" else ["validate", "--photos", str(photos)]
        result, facts = dreambooth(tmp_path, *args, bound=True)
    finally:
        photos.chmod(0o755)
    assert_refused_at_once(result, facts, f"cannot list photos folder {str(photos)!r}", "Permission denied",
                           "chmod")


def test_unreadable_subject_folder(tmp_path, photos):
    subject = photos / "ohwx"
    subject.mkdir()
    deny_reading(subject)
    try:
        result, facts = dreambooth(tmp_path, *train(tmp_path, photos), bound=True)
    finally:
        subject.chmod(0o755)
    assert_refused_at_once(result, facts, f"{str(subject)!r}", "Permission denied")


def test_validate_names_an_unreadable_photo(tmp_path, photos):
    photo = photos / "shrk (2).jpg"
    deny_reading(photo)
    try:
        result, _ = dreambooth(tmp_path, "validate", "--photos", str(photos), "--resolution", "64",
                               bound=True)
    finally:
        photo.chmod(0o644)
    assert result.returncode == EXIT_USER_ERROR and "Traceback" not in result.stderr
    assert "error    shrk (2).jpg" in result.stdout and "[unreadable]" in result.stdout
    assert "Permission denied" in result.stdout and "ok       shrk (1).jpg" in result.stdout
    assert result.stderr.startswith("error: 4 photos (3 ok, 0 warning, 1 error): NOT usable")


def test_an_unreachable_model_url_is_one_paragraph(tmp_path):
    url = closed_port_url("/model.safetensors")
    result, _ = dreambooth(tmp_path, "tokens", "shrk", "--model", url)
    assert result.returncode == EXIT_USER_ERROR and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: Downloading {url} failed (ConnectError")
    assert "Check the network and run again." in result.stderr
