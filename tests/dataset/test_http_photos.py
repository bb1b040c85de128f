"""Photos can come from a web folder (an HTTP directory listing) through fsspec."""

import functools
import json
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from flows.cli import main
from tasks.dataset.validate import ValidationSettings, validate_folder


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def photos_url(tmp_path, photos):
    served = tmp_path / "www"
    shutil.copytree(photos, served / "photos")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/photos/"
    server.shutdown()


def test_validate_reads_a_web_folder_with_the_real_file_names(photos_url):
    report = validate_folder(photos_url, ValidationSettings(resolution=64))
    assert report.usable
    assert sorted(p.name for p in report.photos) == [f"shrk ({n}).jpg" for n in range(1, 5)]


def test_training_imports_photos_from_a_web_folder(prefect_api_url, photos_url, tmp_path, photos):
    storage = tmp_path / "sessions"
    assert main(["train", "--session", "web", "--storage", str(storage), "--photos", photos_url,
                 "--model", "tiny", "--steps", "2"]) == 0
    for original in photos.iterdir():
        assert (storage / "web" / "photos" / original.name).read_bytes() == original.read_bytes()
    manifest = json.loads((storage / "web" / "dataset" / "manifest.json").read_text())
    assert {item["caption"] for item in manifest["items"]} == {"photo of shrk"}
