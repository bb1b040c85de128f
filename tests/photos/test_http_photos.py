"""Photos can come from a web folder (an HTTP directory listing) through fsspec."""

import functools
import json
import shutil
import threading
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import pytest

from dreambooth_core.photos.validate import ValidationSettings, validate_folder
from flows.cli import main


class QuietHandler(SimpleHTTPRequestHandler):
    downloads: Counter  # file name -> GET requests

    def do_GET(self):
        self.downloads[unquote(self.path).rsplit("/", 1)[-1]] += 1
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path, photos):
    """(URL of a web folder holding the photos, GET requests per file name)."""
    folder, downloads = tmp_path / "www", Counter()
    shutil.copytree(photos, folder / "photos")
    handler = type("CountingHandler", (QuietHandler,), {"downloads": downloads})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/photos/", downloads
    server.shutdown()


@pytest.fixture
def photos_url(served):
    return served[0]


def test_validate_reads_a_web_folder_with_the_real_file_names(photos_url):
    report = validate_folder(photos_url, ValidationSettings(resolution=64))
    assert report.usable
    assert sorted(p.name for p in report.photos) == [f"shrk ({n}).jpg" for n in range(1, 5)]


@pytest.mark.slow
def test_training_imports_photos_from_a_web_folder(prefect_api_url, served, tmp_path, photos):
    url, downloads = served
    storage = tmp_path / "sessions"
    assert main(["train", "--session", "web", "--storage", str(storage), "--photos", url,
                 "--model", "tiny", "--steps", "2"]) == 0
    for original in photos.iterdir():
        assert (storage / "web" / "photos" / original.name).read_bytes() == original.read_bytes()
    manifest = json.loads((storage / "web" / "dataset" / "manifest.json").read_text())
    assert {item["caption"] for item in manifest["items"]} == {"photo of shrk"}
    # Checked, hashed and imported from one download; the later steps read the session's copies.
    names = sorted(p.name for p in photos.iterdir())
    assert {name: downloads[name] for name in names} == dict.fromkeys(names, 1)
