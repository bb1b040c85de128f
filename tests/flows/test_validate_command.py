"""`dreambooth validate`: a report on stdout, exit 0 when the photos are usable, 2 when not."""

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from flows.cli import EXIT_USER_ERROR, main

REPO = Path(__file__).resolve().parents[2]


def test_usable_photos_exit_0_with_a_report(photos, capsys):
    assert main(["validate", "--photos", str(photos), "--resolution", "64"]) == 0
    out = capsys.readouterr().out
    for name in ("shrk (1).jpg", "shrk (4).jpg"):
        assert f"ok       {name}" in out
    assert "few-photos" in out and "4 photos (4 ok, 0 warning, 0 error): usable" in out


def test_json_report_for_scripts(photos, capsys):
    (photos / "shrk (5).jpg").write_text("not a photo")
    assert main(["validate", "--photos", str(photos), "--resolution", "64", "--json"]) == EXIT_USER_ERROR
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["usable"] is False and report["resolution"] == 64
    verdicts = {p["name"]: (p["verdict"], [x["code"] for x in p["problems"]]) for p in report["photos"]}
    assert verdicts["shrk (5).jpg"] == ("error", ["not-an-image"])
    assert verdicts["shrk (1).jpg"] == ("ok", [])
    assert "error: 5 photos (4 ok, 0 warning, 1 error): NOT usable" in captured.err


def test_default_resolution_is_512(photos, capsys):
    assert main(["validate", "--photos", str(photos)]) == EXIT_USER_ERROR
    out = capsys.readouterr().out
    assert "error    shrk (4).jpg" in out and "less than half the training resolution (512)" in out
    assert "warning  shrk (1).jpg" in out


def test_class_word_turns_face_checks_off(photos, capsys):
    Image.new("RGB", (256, 256), (90, 120, 150)).save(photos / "shrk (5).png")
    assert main(["validate", "--photos", str(photos), "--resolution", "64", "--json"]) == 0
    faces = {p["name"]: p["faces"] for p in json.loads(capsys.readouterr().out)["photos"]}
    assert faces["shrk (1).jpg"] == 1 and faces["shrk (5).png"] == 0
    assert main(["validate", "--photos", str(photos), "--resolution", "64", "--json",
                 "--class-word", "dog"]) == 0
    assert {p["faces"] for p in json.loads(capsys.readouterr().out)["photos"]} == {None}


def test_bad_flags_and_missing_folder_are_user_errors(tmp_path, capsys):
    assert main(["validate", "--photos", str(tmp_path / "nope")]) == EXIT_USER_ERROR
    assert "does not exist" in capsys.readouterr().err
    assert main(["validate", "--photos", str(tmp_path), "--resolution", "100"]) == EXIT_USER_ERROR
    assert "--resolution" in capsys.readouterr().err
    assert main(["validate", "--photos", str(tmp_path), "--class-word", "shrk="]) == EXIT_USER_ERROR
    assert "--class-word" in capsys.readouterr().err


def test_command_line_without_traceback(photos):
    (photos / "shrk (5).jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    result = subprocess.run([sys.executable, "-m", "flows.cli", "validate", "--photos", str(photos),
                             "--resolution", "64"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_USER_ERROR
    assert "Traceback" not in result.stdout + result.stderr
    assert "error    shrk (5).jpg" in result.stdout and "cannot be read as an image" in result.stdout
