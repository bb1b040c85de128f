"""Photos become square, RGB, upright training images; originals stay as they were."""

import io
import json
import os
import sys
import time

import psutil
import pytest
from PIL import Image
from run_cli import run_cli
from sessions import opened_session, prepare_folder

from dreambooth_core.errors import DatasetError
from dreambooth_core.photos.crop import load_photo, prepare_image
from dreambooth_core.session.paths import DATASET_MANIFEST as MANIFEST


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (80, 40), "red")
    exif = wide.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    photo = load_photo("p.jpg", encode(wide, "JPEG", exif=exif))
    assert photo.size == (40, 80)


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "CMYK", "I;16"])
def test_every_mode_becomes_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    photo = load_photo("p", encode(Image.new(mode, (30, 20)), fmt))
    assert photo.mode == "RGB"


def test_centre_crop_is_square_and_resized():
    photo = Image.new("RGB", (300, 200), "white")
    photo.paste((0, 0, 255), (0, 0, 50, 200))  # a blue band the centre crop drops
    png, box = prepare_image(photo, 64)
    assert box == (50, 0, 250, 200)
    prepared = Image.open(io.BytesIO(png))
    assert prepared.size == (64, 64)
    assert prepared.getpixel((0, 32)) == (255, 255, 255)


def test_preparation_is_deterministic():
    photo = Image.effect_noise((120, 90), 40).convert("RGB")
    assert prepare_image(photo, 64) == prepare_image(photo, 64)


def test_session_keeps_originals_and_records_the_crop(tmp_path, photos):
    session = opened_session(tmp_path / "sessions")
    summary = prepare_folder(session, photos, 64)
    assert summary.count == 4 and summary.resolution == 64
    for original in photos.iterdir():
        assert session.read_bytes(f"photos/{original.name}") == original.read_bytes()
    items = json.loads(session.read_bytes(MANIFEST))["items"]
    assert {i["source"] for i in items} == {f"photos/{p.name}" for p in photos.iterdir()}
    assert all(len(i["source_sha256"]) == 64 and len(i["crop_box"]) == 4 for i in items)


def test_every_unreadable_photo_is_reported_at_once(tmp_path, photos):
    (photos / "broken (1).jpg").write_bytes(b"not a jpeg")
    (photos / "broken (2).png").write_bytes(encode(Image.new("RGB", (50, 50)))[:60])
    with pytest.raises(DatasetError) as error:
        prepare_folder(opened_session(tmp_path), photos, 64)
    assert "broken (1).jpg" in str(error.value) and "broken (2).png" in str(error.value)


@pytest.mark.slow  # a CLI run
@pytest.mark.skipif(sys.platform != "linux" or (os.cpu_count() or 1) < 2,
                    reason="photos are prepared in worker processes on Linux with 2 or more cores")
def test_a_run_killed_during_preparation_leaves_no_process_behind(tmp_path, photos):
    """SIGKILL of the run while its preparation workers (and its temporary Prefect server) run:
    every one of them ends with it, none is left re-parented to init."""
    for photo in photos.iterdir():  # large enough for the worker pool (prepare.PARALLEL_BYTES)
        large = Image.open(photo).convert("RGB").resize((1400, 1400))
        large.save(photo.with_suffix(".png"), compress_level=0)
        photo.unlink()
    # No PREFECT_API_URL: the run starts its own temporary server, a process of the run too.
    killed = run_cli("", "train", "--session", "k", "--storage", str(tmp_path / "sessions"), "--photos",
                     str(photos), "--model", "tiny", "--steps", "4", kill_at="prepare:1", timeout=120)
    assert killed.returncode == -9, killed.stderr[-3000:]
    line = next(line for line in killed.stderr.splitlines() if line.startswith("kill-at: children"))
    children = json.loads(line.removeprefix("kill-at: children"))
    workers = [child for child in children if "flows.temporary_server" not in child["command"]]
    assert len(workers) >= 2 and len(children) > len(workers), f"not killed among workers and server: {line}"
    left = wait_for_gone(children, 30)
    assert not left, f"processes of the killed run still running: {left}"


def wait_for_gone(processes: list[dict], seconds: float) -> list[dict]:
    """Those of `processes` ({pid, started}) still running after up to `seconds` (not ended, not
    a zombie, and not another process that got the same pid)."""
    def running(process: dict) -> bool:
        try:
            found = psutil.Process(process["pid"])
            return found.create_time() == process["started"] and found.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + seconds
    while any(map(running, processes)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [process for process in processes if running(process)]
