"""The model task retries network failures, and only those."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dreambooth_core.config import DreamBoothConfig
from dreambooth_core.errors import ModelError, NetworkError
from tasks.fetch_base_model import RETRIES, fetch_base_model


def serve(statuses: list[int]):
    """A server answering each GET with the next status; the last one repeats."""
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(statuses[min(len(requests), len(statuses)) - 1])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, requests


def fetch(server, tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMBOOTH_CACHE", str(tmp_path))
    url = f"http://127.0.0.1:{server.server_port}/model.safetensors"
    task = fetch_base_model.with_options(retry_delay_seconds=0)
    return task(DreamBoothConfig(session="s", model=url).base_model)


def test_network_errors_are_retried_but_a_missing_file_is_not(prefect_api_url, tmp_path, monkeypatch):
    server, requests = serve([503, 502, 404])
    with pytest.raises(ModelError, match="model.safetensors"):
        fetch(server, tmp_path, monkeypatch)
    assert len(requests) == 3
    server.shutdown()


def test_retries_are_bounded(prefect_api_url, tmp_path, monkeypatch):
    server, requests = serve([503])
    with pytest.raises(NetworkError):
        fetch(server, tmp_path, monkeypatch)
    assert len(requests) == RETRIES + 1
    server.shutdown()
